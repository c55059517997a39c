import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where one tensor lives in a GGUF file.
public struct GGUFTensorInfo: Equatable, Sendable {
    public let name: String
    /// Row-major shape (`[out, in]` for a linear weight): ggml's `ne` reversed.
    public let shape: [Int]
    public let type: GGMLType
    /// Byte offset from the start of the file.
    public let fileOffset: Int

    public var count: Int { shape.reduce(1, *) }
}

/// A GGUF file, memory-mapped: its metadata and its tensors of the types `GGMLType` lists (F32, F16, BF16, Q8_0
/// and llama.cpp's common quantized types Q4_0, Q4_1, Q5_0, Q5_1, Q2_K–Q6_K), all read as F32.
///
/// Every count, length and offset is checked against the file's size before use, so a truncated or corrupt file
/// is an error naming the file, never a crash. F32 tensors are borrowed from the mapping (no copy), so reading
/// back a 7B export costs page cache, not 28 GB of heap.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    /// Metadata keys in file order.
    public let keys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    private let byName: [String: GGUFTensorInfo]
    private let mapping: UnsafeMutableRawPointer
    private let mappedLength: Int

    public init(path: String) throws {
        self.path = path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw LoRAKitError.file(path, isDirectory.boolValue ? "is a directory, expected a .gguf file" : "no such GGUF file")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LoRAKitError.file(path, "cannot open: \(AtomicFile.errnoMessage())") }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw LoRAKitError.file(path, "cannot stat: \(AtomicFile.errnoMessage())") }
        let fileSize = Int(status.st_size)
        guard fileSize >= 24 else {
            throw LoRAKitError.file(path, "not a GGUF file (\(fileSize) bytes is shorter than the GGUF header)")
        }
        // Private and writable, so borrowed tensors may be handed out as mutable pointers without touching the file.
        guard let mapped = mmap(nil, fileSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0),
              mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw LoRAKitError.file(path, "cannot memory-map: \(AtomicFile.errnoMessage())")
        }
        do {
            (version, keys, metadata, alignment, tensors) = try Self.parse(UnsafeRawBufferPointer(start: mapped, count: fileSize), path: path)
        } catch {
            munmap(mapped, fileSize)
            throw error
        }
        mapping = mapped
        mappedLength = fileSize
        byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    deinit { munmap(mapping, mappedLength) }

    private static func parse(_ data: UnsafeRawBufferPointer, path: String) throws
        -> (UInt32, [String], [String: GGUFValue], Int, [GGUFTensorInfo]) {
        var reader = ByteReader(data: data, path: path)
        guard try reader.u32() == GGUF.magic else {
            throw LoRAKitError.file(path, "not a GGUF file (it does not start with the magic \"GGUF\")")
        }
        let version = try reader.u32()
        guard version == 2 || version == 3 else {
            throw LoRAKitError.file(path, "GGUF version \(version) is not supported (expected 3)")
        }
        let tensorCount = try reader.count("tensor count")
        let metadataCount = try reader.count("metadata count")
        var keys: [String] = []
        var metadata: [String: GGUFValue] = [:]
        for _ in 0..<metadataCount {
            let key = try reader.string()
            guard metadata[key] == nil else { throw LoRAKitError.file(path, "metadata key \(key) appears twice") }
            let rawType = try reader.u32()
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw LoRAKitError.file(path, "metadata \(key) has the unknown value type \(rawType)")
            }
            metadata[key] = try reader.value(type, key: key)
            keys.append(key)
        }
        var alignment = GGUF.defaultAlignment
        if let value = metadata["general.alignment"] {
            guard let a = value.integer, a > 0, a % 8 == 0 else {
                throw LoRAKitError.file(path, "general.alignment is \(value), expected a positive multiple of 8")
            }
            alignment = a
        }

        var raw: [(name: String, shape: [Int], type: GGMLType, offset: Int)] = []
        for _ in 0..<tensorCount {
            let name = try reader.string()
            let dims = try reader.u32()
            guard (1...4).contains(dims) else { throw LoRAKitError.file(path, "tensor \(name) has \(dims) dimensions") }
            var ne: [Int] = []
            for _ in 0..<dims { ne.append(try reader.count("a dimension of tensor \(name)")) }
            let rawType = try reader.u32()
            guard let type = GGMLType(rawValue: rawType) else {
                let known = GGMLType.ggmlName(rawValue: rawType).map { " (\($0))" } ?? " (unknown)"
                throw LoRAKitError.file(path, "tensor \(name) has ggml type \(rawType)\(known); LoRAKit reads \(GGMLType.readableList); use a file quantized to one of these, or the model's safetensors")
            }
            let offset = try reader.count("the offset of tensor \(name)")
            guard offset % alignment == 0 else {
                throw LoRAKitError.file(path, "tensor \(name) starts at offset \(offset), not a multiple of the alignment \(alignment)")
            }
            raw.append((name, ne.reversed(), type, offset))
        }
        let dataStart = (reader.position + alignment - 1) / alignment * alignment
        var infos: [GGUFTensorInfo] = []
        var byName: [String: GGUFTensorInfo] = [:]
        for (name, shape, type, offset) in raw {
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d)
                return (p, acc.1 || o)
            }
            let start = dataStart + offset
            guard shape.last.map({ $0 % type.blockSize == 0 }) ?? true else {
                throw LoRAKitError.file(path, "tensor \(name) \(shape) is \(type.ggmlName), which stores whole blocks of \(type.blockSize) values per row")
            }
            guard !overflow, count <= data.count, start + type.byteCount(elements: count) <= data.count else {
                throw LoRAKitError.file(path, "tensor \(name) \(shape) runs past the end of the file (\(data.count) bytes): the file is truncated")
            }
            guard byName[name] == nil else { throw LoRAKitError.file(path, "tensor \(name) appears twice") }
            let info = GGUFTensorInfo(name: name, shape: shape, type: type, fileOffset: start)
            infos.append(info)
            byName[name] = info
        }
        return (version, keys, metadata, alignment, infos)
    }

    public func info(_ name: String) -> GGUFTensorInfo? { byName[name] }

    /// A metadata value, or an error naming the file and the key when it is absent.
    public func value(_ key: String) throws -> GGUFValue {
        guard let value = metadata[key] else { throw LoRAKitError.file(path, "has no metadata key \(key)") }
        return value
    }

    /// Releases the memory-mapped pages of tensor `name` (the whole pages inside its bytes; they are read again
    /// from the file if touched), for a caller that converted the tensor into memory of its own and holds no
    /// tensor borrowed from those bytes: a dequantized model then does not also keep the file resident.
    public func releasePages(of name: String) {
        guard let info = byName[name] else { return }
        releaseWholePages(of: mapping, from: info.fileOffset, to: info.fileOffset + info.type.byteCount(elements: info.count))
    }

    /// The tensor `name` as F32: aligned F32 data is borrowed from the mapping (the tensor keeps this file alive);
    /// F16 and BF16 are converted exactly into a new tensor, quantized blocks read back as gguf-py's `dequantize`
    /// does (`GGMLDequantization`).
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = byName[name] else { throw LoRAKitError.file(path, "has no tensor \(name)") }
        // Validated in parse: fileOffset + byte size <= mappedLength.
        let start = UnsafeRawPointer(mapping + info.fileOffset)
        if info.type == .f32 && Int(bitPattern: start) % MemoryLayout<Float>.alignment == 0 {
            return Tensor(borrowing: (mapping + info.fileOffset).assumingMemoryBound(to: Float.self), shape: info.shape, owner: self)
        }
        let out = Tensor(shape: info.shape), data = out.data
        switch info.type {
        case .f32:
            for i in 0..<info.count { data[i] = Float(bitPattern: UInt32(littleEndian: start.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .f16:
            for i in 0..<info.count { data[i] = HalfConversion.float(fromF16: UInt16(littleEndian: start.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .bf16:
            for i in 0..<info.count { data[i] = HalfConversion.float(fromBF16: UInt16(littleEndian: start.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            GGMLDequantization.dequantize(info.type, start, count: info.count, into: data)
        }
        return out
    }
}

/// Reads little-endian GGUF primitives with bounds checks; every failure names the file.
struct ByteReader {
    let data: UnsafeRawBufferPointer
    let path: String
    var position = 0

    private mutating func take<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let size = MemoryLayout<T>.size
        guard position + size <= data.count else {
            throw LoRAKitError.file(path, "ends unexpectedly at byte \(position) (the file is truncated)")
        }
        let value = data.loadUnaligned(fromByteOffset: position, as: T.self)
        position += size
        return T(littleEndian: value)
    }

    mutating func u32() throws -> UInt32 { try take(UInt32.self) }

    /// A u64 used as a count, length, extent or offset: none can exceed the file's size in a valid file, so a
    /// larger one is refused before anything is allocated for it.
    mutating func count(_ what: String) throws -> Int {
        let value = try take(UInt64.self)
        guard value <= UInt64(data.count) else {
            throw LoRAKitError.file(path, "\(what) is \(value), impossible in a file of \(data.count) bytes (the file is corrupt)")
        }
        return Int(value)
    }

    mutating func string() throws -> String {
        let length = try count("a string length")
        guard position + length <= data.count else {
            throw LoRAKitError.file(path, "a string at byte \(position) runs past the end of the file (the file is truncated)")
        }
        let bytes = UnsafeRawBufferPointer(rebasing: data[position..<position + length])
        position += length
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw LoRAKitError.file(path, "a string at byte \(position - length) is not valid UTF-8")
        }
        return text
    }

    mutating func value(_ type: GGUFValueType, key: String) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try take(UInt8.self))
        case .int8: return .int8(try take(Int8.self))
        case .uint16: return .uint16(try take(UInt16.self))
        case .int16: return .int16(try take(Int16.self))
        case .uint32: return .uint32(try take(UInt32.self))
        case .int32: return .int32(try take(Int32.self))
        case .float32: return .float32(Float(bitPattern: try take(UInt32.self)))
        case .bool:
            let byte = try take(UInt8.self)
            guard byte <= 1 else { throw LoRAKitError.file(path, "metadata \(key) is a bool holding \(byte)") }
            return .bool(byte == 1)
        case .string: return .string(try string())
        case .uint64: return .uint64(try take(UInt64.self))
        case .int64: return .int64(try take(Int64.self))
        case .float64: return .float64(Double(bitPattern: try take(UInt64.self)))
        case .array:
            let rawType = try u32()
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw LoRAKitError.file(path, "metadata \(key) is an array of the unknown type \(rawType)")
            }
            let n = try count("the length of metadata array \(key)")
            var values: [GGUFValue] = []
            values.reserveCapacity(min(n, 1 << 20))
            for _ in 0..<n { values.append(try value(elementType, key: key)) }
            return .array(elementType, values)
        }
    }
}
