/// The element types LoRAKit reads from and writes to safetensors files.
///
/// Everything is computed in F32; F16 and BF16 exist so that published models load and merged models can be
/// exported at half the size.
public enum DType: String, CaseIterable, Sendable {
    case f32, f16, bf16

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        }
    }

    /// The name in a safetensors header ("F32", "F16", "BF16").
    public var safetensorsName: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        }
    }

    /// The dtype a safetensors header names, or nil for any type LoRAKit does not read.
    public init?(safetensorsName: String) {
        switch safetensorsName {
        case "F32": self = .f32
        case "F16": self = .f16
        case "BF16": self = .bf16
        default: return nil
        }
    }
}

/// Scalar conversions between F32 and the two 16-bit formats, as PyTorch does them.
public enum HalfConversion {
    /// IEEE half bits -> Float (exact).
    @inline(__always)
    public static func float(fromF16 bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    /// bfloat16 bits -> Float (exact: bf16 is the top half of an F32).
    @inline(__always)
    public static func float(fromBF16 bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// Float -> IEEE half bits, round to nearest even; overflow becomes ±inf.
    @inline(__always)
    public static func f16Bits(_ value: Float) -> UInt16 { Float16(value).bitPattern }

    /// Float -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN (plain rounding could carry it into inf).
    @inline(__always)
    public static func bf16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let roundingBias: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
    }
}
