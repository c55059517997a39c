import Checkpoints
import Foundation
import MiniGPT
import Tensors
import Tokenizer
#if canImport(Glibc)
import Glibc
#endif

/// The file formats a merged model is written in.
public enum ExportFormat: String, CaseIterable, Sendable {
    /// A Hugging Face model directory (DESIGN §2): `config.json`, `model.safetensors`, `tokenizer.model`.
    case hf
    /// One llama.cpp GGUF file, architecture `llama`, with the SentencePiece vocabulary.
    case gguf
}

/// The element type of a merged model's matrices: the safetensors types for both formats, and Q8_0 (llama.cpp's
/// 8-bit blocks, about half the size of F16) for GGUF only.
public enum ExportDType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0

    /// The safetensors dtype, nil for the GGUF-only Q8_0.
    public var safetensors: DType? {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return nil
        }
    }

    public var ggml: GGMLType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return .q8_0
        }
    }
}

/// What `ModelExport.merge` did, for the command line to print.
public struct MergeReport: Sendable {
    public let path: String
    public let format: ExportFormat
    public let dtype: ExportDType
    /// Projections that received at least one adapter.
    public let mergedProjections: Int
    /// Max |Δlogit| between the base with the adapters attached and the model read back from `path`.
    public let maxDifference: Float
    /// Largest |logit| of the check, to judge `maxDifference` against.
    public let maxLogit: Float
    public let checkTokens: [Int32]
}

/// `lora merge`: base + adapters → merged weights → a Hugging Face directory or a GGUF file, then a self-check.
public enum ModelExport {
    /// Files of the base directory copied beside the merged weights when present (`tokenizer.model` is required).
    static let tokenizerFiles = ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                                 "tokenizer.json", "generation_config.json"]

    /// Merges `adapterArguments` (`DIR` or `DIR:WEIGHT`) into the model `base` (a Hugging Face directory or a GGUF
    /// file) and writes it to `out`; with no adapter, writes the base model itself in `format` (a GGUF base becomes
    /// a Hugging Face directory with `tokenizer.model` built from its vocabulary, and the reverse).
    ///
    /// The output appears whole or not at all: a directory is built in a temporary sibling and renamed, a file is
    /// written to a temporary sibling and renamed. An existing `out` is refused unless `overwrite`. After writing,
    /// the output is read back and checked: every tensor must be exactly the merged weights rounded to `dtype`, and
    /// (for F32) its logits must match the base with the adapters attached; if not, the output is removed and the
    /// merge fails.
    public static func merge(base basePath: String, adapterArguments: [String], out: String, format: ExportFormat,
                             dtype: ExportDType = .f32, overwrite: Bool = false) throws -> MergeReport {
        if format == .hf && dtype.safetensors == nil {
            throw LoRAKitError("--dtype \(dtype.rawValue) is a llama.cpp (GGUF) type: use --format gguf, or f32, f16 or bf16 for --format hf")
        }
        try checkOutput(out, overwrite: overwrite)
        let base = try BaseModel.weights(basePath)
        var adapters: [any AttachableAdapters] = []
        for argument in adapterArguments {
            let (directory, weight) = try AdapterSet.parseAdapterArgument(argument)
            let set = try AdapterDirectory.load(directory, dims: base.dims)
            set.multiplier = weight
            adapters.append(set)
        }
        let names = try adapterArguments.map { try AdapterSet.parseAdapterArgument($0).directory }
        // No adapter at all converts the base itself (e.g. the GGUF a llama.cpp LoRA adapter is applied to).
        let merged = adapters.isEmpty ? base : try AdapterMerge.merge(base: base, adapters: adapters, names: names)

        let written: LlamaWeights
        let storage: ([Int]) -> GGMLType
        switch format {
        case .hf:
            let safetensors = dtype.safetensors ?? .f32
            try AtomicFile.writeDirectory(at: out, overwrite: overwrite) { temporary in
                try writeHF(merged, dtype: safetensors, base: basePath, to: temporary)
            }
            written = try LlamaWeights.load(directory: out)
            storage = { _ in GGMLType(safetensors) }
        case .gguf:
            // a GGUF base's vocabulary (and chat template) as it is; a directory's from its tokenizer.model and
            // tokenizer_config.json, as llama.cpp's converter takes them
            var vocabulary: GGUFVocabulary
            if BaseModel.isGGUF(basePath) {
                vocabulary = try GGUFVocabulary(file: try BaseModel.file(basePath))
            } else {
                vocabulary = try GGUFVocabulary(tokenizer: try BaseModel.tokenizer(basePath), config: base.config)
                vocabulary.chatTemplate = Self.chatTemplate(ofDirectory: basePath)
            }
            try LlamaGGUF.writeModel(merged, vocabulary: vocabulary, type: dtype.ggml, name: modelName(out), to: out)
            written = try LlamaGGUF.readModel(try GGUFFile(path: out), config: base.config)
            storage = { LlamaGGUF.storageType(shape: $0, requested: dtype.ggml) }
        }

        if let mismatch = AdapterMerge.firstMismatch(written: written, expected: merged, storage: storage) {
            remove(out)
            throw LoRAKitError.file(out, "the written model does not read back as merged (\(mismatch)); it was removed")
        }
        let tokens = AdapterMerge.checkTokens(base.config)
        let (difference, largest) = try AdapterMerge.logitDifference(base: base, adapters: adapters, merged: written,
                                                                   tokens: tokens)
        // F32 merging only reorders float sums, so anything beyond rounding noise is a bug; F16/BF16 rounding and
        // Q8_0 quantization of the weights move logits by an amount that depends on the model: reported, not judged.
        let tolerance = 1e-3 * max(1, largest)
        if difference.isNaN || (dtype == .f32 && difference > tolerance) {
            remove(out)
            throw LoRAKitError.file(out, "self-check failed: the merged model's logits differ from base+adapter by \(difference) (tolerance \(tolerance)); the output was removed")
        }
        let mergedCount = (0..<base.dims.layers).reduce(0) { count, l in
            count + Projection.allCases.filter { p in adapters.contains { $0.adapts(layer: l, projection: p) } }.count
        }
        return MergeReport(path: out, format: format, dtype: dtype, mergedProjections: mergedCount,
                           maxDifference: difference, maxLogit: largest, checkTokens: tokens)
    }

    /// Writes a Hugging Face model directory's files into the existing directory `directory`, with the tokenizer
    /// files of the base directory, or the `tokenizer.model` of a GGUF base's vocabulary.
    public static func writeHF(_ weights: LlamaWeights, dtype: DType, base: String, to directory: String) throws {
        try SafeTensorsWriter.write(weights.named.map { (name: $0.0, tensor: $0.1) }, dtype: dtype,
                                    metadata: ["format": "pt"], to: directory + "/model.safetensors")
        try AtomicFile.write(try configJSON(weights.config, dtype: dtype), to: directory + "/config.json")
        if BaseModel.isGGUF(base) {
            try AtomicFile.write(try BaseModel.tokenizerModel(base), to: directory + "/tokenizer.model")
            return
        }
        for name in tokenizerFiles {
            let source = base + "/" + name
            guard FileManager.default.fileExists(atPath: source) else {
                if name == "tokenizer.model" {
                    throw LoRAKitError.file(base, "no tokenizer.model to copy into the merged model")
                }
                continue
            }
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: source)) } catch {
                throw LoRAKitError.file(source, "cannot read: \(error.localizedDescription)")
            }
            try AtomicFile.write(data, to: directory + "/" + name)
        }
    }

    /// config.json as LlamaConfig writes it, with the dtype of the stored weights (`torch_dtype`, and `dtype`,
    /// the name transformers 5 uses), so `from_pretrained(dtype="auto")` keeps F16/BF16 exports at half size.
    static func configJSON(_ config: LlamaConfig, dtype: DType) throws -> Data {
        let encoder = JSONEncoder()
        var object = try JSONSerialization.jsonObject(with: try encoder.encode(config)) as? [String: Any] ?? [:]
        let name: String
        switch dtype {
        case .f32: name = "float32"
        case .f16: name = "float16"
        case .bf16: name = "bfloat16"
        }
        object["torch_dtype"] = name
        object["dtype"] = name
        var data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        data.append(UInt8(ascii: "\n"))
        return data
    }

    /// The `chat_template` of a model directory's `tokenizer_config.json` (one template, or the "default" of
    /// transformers' named list), which llama.cpp's converter writes as `tokenizer.chat_template`. Only metadata
    /// for the export: an absent or unreadable file gives none, and the merge goes on.
    static func chatTemplate(ofDirectory directory: String) -> String? {
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: directory + "/tokenizer_config.json")),
              let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let entry = object["chat_template"] else { return nil }
        return BaseModel.chatTemplate(inTokenizerConfigEntry: entry)
    }

    /// Refuses, before any work, an output that exists (unless `overwrite`) or whose directory cannot be written.
    public static func checkOutput(_ path: String, overwrite: Bool) throws {
        guard !path.isEmpty else { throw LoRAKitError("--out is empty") }
        var status = stat()
        if lstat(path, &status) == 0 && !overwrite {
            throw LoRAKitError.file(path, "already exists; choose another --out or pass --overwrite to replace it")
        }
        let directory = AtomicFile.parentDirectory(of: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw LoRAKitError.file(path, "cannot write here: the directory \(directory) does not exist")
        }
        guard access(directory, W_OK) == 0 else {
            throw LoRAKitError.file(path, "cannot write here: the directory \(directory) is not writable")
        }
    }

    /// `general.name` of a GGUF export: the output's file name without its extension.
    static func modelName(_ path: String) -> String {
        let file = (path as NSString).lastPathComponent
        let stem = (file as NSString).deletingPathExtension
        return stem.isEmpty ? "merged" : stem
    }

    private static func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }
}
