import Foundation

// GGUF (version 3), the single-file format of llama.cpp. Layout, all little-endian:
//   magic "GGUF" (u32 0x46554747), version u32 = 3, tensor count u64, metadata count u64,
//   metadata: key (string), value type (u32), value,
//   tensor infos: name (string), n_dims (u32), ne[0..n_dims) (u64 each, innermost dimension FIRST), ggml type (u32),
//                 offset (u64, from the start of the data section, a multiple of the alignment),
//   padding to `general.alignment` (default 32), then the data section.
// A string is a u64 byte count and UTF-8 bytes (no terminator); an array is an element type (u32), a u64 count
// and the elements. These are the rules of llama.cpp's gguf-py (`gguf/constants.py`, `gguf_writer.py`).

/// The type tags of GGUF metadata values.
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7, string = 8
    case array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// One GGUF metadata value.
public indirect enum GGUFValue: Equatable, Sendable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    /// A homogeneous array: every element has `elementType` (nested arrays are allowed by the format).
    case array(GGUFValueType, [GGUFValue])

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        case .array: return .array
        }
    }

    /// An array of strings (`tokenizer.ggml.tokens`).
    public static func strings(_ values: [String]) -> GGUFValue { .array(.string, values.map { .string($0) }) }
    /// An array of F32 (`tokenizer.ggml.scores`).
    public static func float32s(_ values: [Float]) -> GGUFValue { .array(.float32, values.map { .float32($0) }) }
    /// An array of I32 (`tokenizer.ggml.token_type`).
    public static func int32s(_ values: [Int32]) -> GGUFValue { .array(.int32, values.map { .int32($0) }) }

    /// The value as an integer, whatever its integer type (nil for other types or values beyond Int).
    public var integer: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value as a Double for the two float types.
    public var real: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return nil
        }
    }

    public var text: String? { if case .string(let s) = self { return s } else { return nil } }

    public var elements: [GGUFValue]? { if case .array(_, let e) = self { return e } else { return nil } }

    public var description: String {
        switch self {
        case .string(let s): return "\"\(s)\""
        case .bool(let b): return String(b)
        case .float32(let v): return String(v)
        case .float64(let v): return String(v)
        case .array(let type, let values):
            let shown = values.prefix(4).map(\.description).joined(separator: ", ")
            return "[\(type): \(shown)\(values.count > 4 ? ", … (\(values.count))" : "")]"
        default: return integer.map(String.init) ?? "?"
        }
    }
}

/// The ggml element types LoRAKit reads (llama.cpp's `GGMLQuantizationType`), of which it writes F32, F16, BF16
/// and Q8_0 (`isWritable`). The others are llama.cpp's common quantized types, read back to F32 by
/// `GGMLDequantization`; their block layouts are described there.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

    /// The types `GGUFWriter` stores: the others would need llama.cpp's quantizers, which LoRAKit does not have.
    public static let writable: [GGMLType] = [.f32, .f16, .bf16, .q8_0]

    public var isWritable: Bool { Self.writable.contains(self) }

    /// Values per block: a quantized type stores each row in whole blocks.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return 256
        }
    }

    /// Bytes per block (gguf-py's `GGML_QUANT_SIZES`).
    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return Q8_0.blockBytes
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        }
    }

    /// Bytes that `elements` values take (a multiple of `blockSize`).
    public func byteCount(elements: Int) -> Int { elements / blockSize * blockBytes }

    /// The name llama.cpp gives the type ("Q4_K").
    public var ggmlName: String { Self.ggmlName(rawValue: rawValue) ?? "type \(rawValue)" }

    /// The name of any ggml type llama.cpp knows, also those LoRAKit does not read (for error messages); nil for
    /// a number llama.cpp does not use.
    public static func ggmlName(rawValue: UInt32) -> String? { ggmlNames[rawValue] }

    /// gguf-py's `GGMLQuantizationType` (constants.py).
    private static let ggmlNames: [UInt32: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
        10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
        16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
        24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
        34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
    ]

    /// What LoRAKit reads, for error messages.
    public static let readableList = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K–Q6_K"

    /// The ggml type of a safetensors dtype.
    public init(_ dtype: DType) {
        switch dtype {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        }
    }

    /// `general.file_type` of a model whose matrices are of this type (llama.cpp's `LlamaFileType`:
    /// ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7, MOSTLY_BF16 = 32). Only for the writable types: the program
    /// chooses the type of what it writes (`ExportDType`, a safetensors dtype), never a file it reads.
    public var fileType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q8_0: return 7
        case .bf16: return 32
        case .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            preconditionFailure("LoRAKit does not write \(ggmlName) models, so it has no file type for them")
        }
    }

    /// `values` stored as this type and read back, as the GGUF writer and reader do it (for Q8_0, `count` is a
    /// multiple of the block size and the blocks run along the rows). Only for the writable types, as `fileType`.
    public func roundTrip(_ values: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32: out.update(from: values, count: count)
        case .f16: for i in 0..<count { out[i] = HalfConversion.float(fromF16: HalfConversion.f16Bits(values[i])) }
        case .bf16: for i in 0..<count { out[i] = HalfConversion.float(fromBF16: HalfConversion.bf16Bits(values[i])) }
        case .q8_0:
            let bytes = UnsafeMutableRawPointer.allocate(byteCount: byteCount(elements: count), alignment: 2)
            defer { bytes.deallocate() }
            Q8_0.quantize(values, count: count, into: bytes)
            Q8_0.dequantize(bytes, count: count, into: out)
        case .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            preconditionFailure("LoRAKit has no \(ggmlName) quantizer")
        }
    }
}

/// Constants of the format.
public enum GGUF {
    /// "GGUF" read as a little-endian u32.
    public static let magic: UInt32 = 0x4655_4747
    public static let version: UInt32 = 3
    /// Alignment of the data section and of every tensor in it when `general.alignment` is absent.
    public static let defaultAlignment = 32
}
