import Foundation
import Tensors

/// The weights of a Hugging Face model directory: `model.safetensors`, or `model.safetensors.index.json`
/// and its shards.
///
/// Every file is memory-mapped once and validated when the store opens, so a missing shard or a bad index
/// fails before any model is built.
public final class WeightStore: @unchecked Sendable {
    /// The model directory.
    public let directory: String
    /// Opened files by name relative to `directory` ("model.safetensors", "model-00001-of-00002.safetensors").
    public let files: [String: SafeTensorsFile]
    /// Tensor names, sorted.
    public let names: [String]

    /// Tensor name -> file name (key of `files`).
    private let location: [String: String]

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    /// Opens the weights in `directory` (the single file wins when both layouts are present, as in transformers).
    public init(directory: String) throws {
        self.directory = directory
        let single = Self.join(directory, Self.singleFileName)
        let index = Self.join(directory, Self.indexFileName)
        if FileManager.default.fileExists(atPath: single) {
            let file = try SafeTensorsFile(path: single)
            files = [Self.singleFileName: file]
            location = Dictionary(uniqueKeysWithValues: file.names.map { ($0, Self.singleFileName) })
        } else if FileManager.default.fileExists(atPath: index) {
            let weightMap = try Self.readWeightMap(index)
            var opened: [String: SafeTensorsFile] = [:]
            for shard in Set(weightMap.values).sorted() {
                let shardPath = Self.join(directory, shard)
                guard FileManager.default.fileExists(atPath: shardPath) else {
                    let example = weightMap.first { $0.value == shard }?.key ?? ""
                    throw LoRAKitError.file(index, "shard \(shard) (holding \(example)) does not exist in \(directory)")
                }
                opened[shard] = try SafeTensorsFile(path: shardPath)
            }
            for (name, shard) in weightMap.sorted(by: { $0.key < $1.key }) where opened[shard]?.contains(name) != true {
                throw LoRAKitError.file(index, "weight_map puts tensor \(name) in \(shard), but \(shard) has no such tensor")
            }
            files = opened
            location = weightMap
        } else {
            throw LoRAKitError.file(directory, "no \(Self.singleFileName) or \(Self.indexFileName)")
        }
        names = location.keys.sorted()
    }

    /// Whether the model has a tensor called `name`.
    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// Dtype, shape and byte range of `name`, or nil if absent.
    public func info(_ name: String) -> TensorInfo? {
        guard let file = location[name] else { return nil }
        return files[file]?.info(name)
    }

    /// The tensor `name` as F32, checked against the `shape` the model config implies.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let fileName = location[name], let file = files[fileName], let info = file.info(name) else {
            throw LoRAKitError.file(directory, "missing tensor \(name)")
        }
        guard info.shape == shape else {
            throw LoRAKitError.file(Self.join(directory, fileName),
                                    "tensor \(name) has shape \(info.shape), the config says \(shape)")
        }
        return try file.tensor(name)
    }

    /// Releases the memory-mapped pages of tensor `name` (see `SafeTensorsFile.releasePages(of:)`).
    public func releasePages(of name: String) {
        guard let fileName = location[name], let file = files[fileName] else { return }
        file.releasePages(of: name)
    }

    /// The `weight_map` of an index file, validated (non-empty; string values naming files inside the directory).
    private static func readWeightMap(_ path: String) throws -> [String: String] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw LoRAKitError.file(path, "cannot read: \(AtomicFile.describe(error))")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw LoRAKitError.file(path, "is not valid JSON")
        }
        guard let top = object as? [String: Any] else { throw LoRAKitError.file(path, "is not a JSON object") }
        guard let rawMap = top["weight_map"] as? [String: Any] else {
            throw LoRAKitError.file(path, "has no weight_map object")
        }
        guard !rawMap.isEmpty else { throw LoRAKitError.file(path, "has an empty weight_map") }
        var weightMap: [String: String] = [:]
        for (name, value) in rawMap {
            guard let shard = value as? String, !shard.isEmpty else {
                throw LoRAKitError.file(path, "weight_map entry \(name) is not a file name")
            }
            // Shards live beside the index; refuse paths that would escape the model directory.
            guard !shard.hasPrefix("/"), !shard.split(separator: "/").contains("..") else {
                throw LoRAKitError.file(path, "weight_map entry \(name) points outside the model directory: \(shard)")
            }
            weightMap[name] = shard
        }
        return weightMap
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
