import Foundation
import Tensors

/// Writes safetensors files that PyTorch's `safetensors` reads, atomically.
///
/// Layout: 8-byte little-endian header length, a JSON header with sorted keys padded with spaces to a multiple
/// of 8 bytes (so F32 data stays aligned for memory-mapping), then each tensor's bytes in the order given.
public enum SafeTensorsWriter {
    /// Writes `tensors` as F32 (names must be unique; `metadata` goes to `__metadata__`, omitted when empty).
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                             to path: String) throws {
        try write(tensors, dtype: .f32, metadata: metadata, to: path)
    }

    /// Writes `tensors` converted to `dtype` (F16 and BF16 round to nearest even), e.g. for a half-size export.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], dtype: DType,
                             metadata: [String: String] = [:], to path: String) throws {
        let header = try headerBytes(tensors, dtype: dtype, metadata: metadata, path: path)
        try AtomicFile.write(to: path) { handle in
            var length = UInt64(header.count).littleEndian
            try handle.write(contentsOf: Data(bytes: &length, count: 8))
            try handle.write(contentsOf: header)
            for (_, tensor) in tensors {
                try writeData(of: tensor, as: dtype, to: handle)
            }
        }
    }

    /// The padded JSON header for `tensors` laid out back to back in the given order.
    static func headerBytes(_ tensors: [(name: String, tensor: Tensor)], dtype: DType,
                            metadata: [String: String], path: String) throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for (name, tensor) in tensors {
            guard name != "__metadata__" else {
                throw LoRAKitError.file(path, "cannot name a tensor __metadata__ (reserved by the format)")
            }
            guard header[name] == nil else { throw LoRAKitError.file(path, "tensor \(name) is listed twice") }
            let size = tensor.count * dtype.byteSize
            header[name] = ["dtype": dtype.safetensorsName, "shape": tensor.shape, "data_offsets": [offset, offset + size]] as [String: Any]
            offset += size
        }
        // An empty header must still be the JSON object "{}".
        var data = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        let padding = (8 - data.count % 8) % 8
        data.append(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: padding))
        return data
    }

    /// Chunk size for F16/BF16 conversion: bounded memory however large the tensor.
    private static let conversionChunk = 1 << 20

    private static func writeData(of tensor: Tensor, as dtype: DType, to handle: FileHandle) throws {
        switch dtype {
        case .f32:
            // The host is little-endian (x86-64, arm64), like the format.
            try handle.write(contentsOf: Data(bytesNoCopy: tensor.data, count: tensor.bytes, deallocator: .none))
        case .f16, .bf16:
            var chunk = [UInt16](repeating: 0, count: min(conversionChunk, tensor.count))
            var start = 0
            while start < tensor.count {
                let n = min(conversionChunk, tensor.count - start)
                let source = tensor.data + start
                chunk.withUnsafeMutableBufferPointer { bits in
                    if dtype == .f16 {
                        for i in 0..<n { bits[i] = HalfConversion.f16Bits(source[i]).littleEndian }
                    } else {
                        for i in 0..<n { bits[i] = HalfConversion.bf16Bits(source[i]).littleEndian }
                    }
                }
                try chunk.withUnsafeBytes { raw in
                    try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: raw.baseAddress!),
                                                      count: n * 2, deallocator: .none))
                }
                start += n
            }
        }
    }
}
