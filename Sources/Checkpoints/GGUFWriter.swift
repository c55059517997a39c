import Foundation
import Tensors

/// Builds a GGUF v3 file (see GGUFFormat.swift for the layout) and writes it atomically.
///
/// Metadata keeps the order it was added in; tensors are laid out in the order added, each padded to the
/// alignment, as gguf-py's `GGUFWriter` does. Tensors are given in row-major shape (`[out, in]` for a linear
/// weight) and stored with ggml's dimension order (`ne = [in, out]`).
public struct GGUFWriter {
    /// Alignment of the data section and of each tensor; written as `general.alignment` only when not 32.
    public let alignment: Int
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    public private(set) var tensors: [(name: String, tensor: Tensor, type: GGMLType)] = []
    private var keys = Set<String>()
    private var names = Set<String>()

    public init(alignment: Int = GGUF.defaultAlignment) {
        precondition(alignment > 0 && alignment % 8 == 0, "GGUF alignment must be a positive multiple of 8")
        self.alignment = alignment
        if alignment != GGUF.defaultAlignment { metadata.append(("general.alignment", .uint32(UInt32(alignment)))) }
    }

    /// Adds a metadata entry; a key given twice is an error (llama.cpp refuses such files).
    public mutating func add(_ key: String, _ value: GGUFValue) throws {
        guard !key.isEmpty else { throw LoRAKitError("GGUF metadata key is empty") }
        guard !keys.contains(key) else { throw LoRAKitError("GGUF metadata key \(key) is set twice") }
        if case .array(let type, let values) = value, let bad = values.first(where: { $0.type != type }) {
            throw LoRAKitError("GGUF metadata \(key): an array of \(type) holds a \(bad.type)")
        }
        keys.insert(key)
        metadata.append((key, value))
    }

    /// Adds a tensor stored as `type` (F32 data is converted to F16/BF16 with round-to-nearest-even, or quantized
    /// to Q8_0 blocks along its rows). Only the writable types (`GGMLType.writable`): LoRAKit reads Q4_0…Q6_K but has
    /// no quantizer for them.
    public mutating func addTensor(_ name: String, _ tensor: Tensor, type: GGMLType) throws {
        guard type.isWritable else {
            let writable = GGMLType.writable.map(\.ggmlName).joined(separator: ", ")
            throw LoRAKitError("GGUF tensor \(name): LoRAKit reads \(type.ggmlName) but cannot write it; it writes \(writable) (quantize the written file with llama.cpp's llama-quantize)")
        }
        guard !name.isEmpty, name.utf8.count < 64 else {
            throw LoRAKitError("GGUF tensor name '\(name)' must have 1 to 63 bytes (llama.cpp's GGML_MAX_NAME is 64)")
        }
        guard !names.contains(name) else { throw LoRAKitError("GGUF tensor \(name) is added twice") }
        guard (1...4).contains(tensor.shape.count) else {
            throw LoRAKitError("GGUF tensor \(name) has \(tensor.shape.count) dimensions; ggml allows 1 to 4")
        }
        if let row = tensor.shape.last, row % type.blockSize != 0 {
            throw LoRAKitError("GGUF tensor \(name) has rows of \(row) values; \(type) stores whole blocks of \(type.blockSize)")
        }
        names.insert(name)
        tensors.append((name, tensor, type))
    }

    /// Writes the file to `path` atomically: a temporary sibling, flushed, then renamed.
    public func write(to path: String) throws {
        var header = ByteWriter()
        header.u32(GGUF.magic)
        header.u32(GGUF.version)
        header.u64(UInt64(tensors.count))
        header.u64(UInt64(metadata.count))
        for (key, value) in metadata {
            header.string(key)
            header.u32(value.type.rawValue)
            header.value(value)
        }
        var offset = 0
        for (name, tensor, type) in tensors {
            header.string(name)
            header.u32(UInt32(tensor.shape.count))
            for extent in tensor.shape.reversed() { header.u64(UInt64(extent)) }
            header.u32(type.rawValue)
            header.u64(UInt64(offset))
            offset += padded(type.byteCount(elements: tensor.count))
        }
        header.bytes.append(contentsOf: [UInt8](repeating: 0, count: padded(header.bytes.count) - header.bytes.count))

        try AtomicFile.write(to: path) { handle in
            try handle.write(contentsOf: header.bytes)
            for (_, tensor, type) in tensors {
                try Self.writeData(of: tensor, as: type, to: handle)
                let size = type.byteCount(elements: tensor.count)
                if padded(size) > size { try handle.write(contentsOf: Data(count: padded(size) - size)) }
            }
        }
    }

    private func padded(_ size: Int) -> Int { (size + alignment - 1) / alignment * alignment }

    /// Elements converted per chunk, so a large tensor in F16 needs no second full-size buffer.
    private static let conversionChunk = 1 << 20

    private static func writeData(of tensor: Tensor, as type: GGMLType, to handle: FileHandle) throws {
        if type == .f32 {
            // The host is little-endian (x86-64, arm64), like the format.
            try handle.write(contentsOf: Data(bytesNoCopy: tensor.data, count: tensor.bytes, deallocator: .none))
            return
        }
        if type == .q8_0 {
            // Whole blocks per chunk (rows are whole blocks, so blocks never straddle rows).
            let chunkValues = conversionChunk / Q8_0.blockSize * Q8_0.blockSize
            var blocks = Data(count: type.byteCount(elements: min(chunkValues, tensor.count)))
            var start = 0
            while start < tensor.count {
                let n = min(chunkValues, tensor.count - start)
                blocks.withUnsafeMutableBytes { raw in
                    if let base = raw.baseAddress { Q8_0.quantize(tensor.data + start, count: n, into: base) }
                }
                try handle.write(contentsOf: blocks.prefix(type.byteCount(elements: n)))
                start += n
            }
            return
        }
        precondition(type == .f16 || type == .bf16, "addTensor accepts only the writable types")
        var chunk = [UInt16](repeating: 0, count: min(conversionChunk, tensor.count))
        var start = 0
        while start < tensor.count {
            let n = min(conversionChunk, tensor.count - start)
            let source = tensor.data + start
            for i in 0..<n {
                chunk[i] = (type == .f16 ? HalfConversion.f16Bits(source[i]) : HalfConversion.bf16Bits(source[i])).littleEndian
            }
            try chunk.withUnsafeBytes { raw in try handle.write(contentsOf: Data(raw.prefix(n * 2))) }
            start += n
        }
    }
}

/// Appends little-endian GGUF primitives to a byte buffer.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func string(_ s: String) {
        u64(UInt64(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }

    mutating func value(_ value: GGUFValue) {
        switch value {
        case .uint8(let v): bytes.append(v)
        case .int8(let v): bytes.append(UInt8(bitPattern: v))
        case .uint16(let v): withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
        case .int16(let v): withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
        case .uint32(let v): u32(v)
        case .int32(let v): u32(UInt32(bitPattern: v))
        case .float32(let v): u32(v.bitPattern)
        case .bool(let v): bytes.append(v ? 1 : 0)
        case .string(let s): string(s)
        case .uint64(let v): u64(v)
        case .int64(let v): u64(UInt64(bitPattern: v))
        case .float64(let v): u64(v.bitPattern)
        case .array(let type, let values):
            u32(type.rawValue)
            u64(UInt64(values.count))
            for element in values { self.value(element) }
        }
    }
}
