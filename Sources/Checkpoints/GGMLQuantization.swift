/// ggml's Q8_0 blocks, as llama.cpp stores quantized weights: each run of 32 values of a row becomes an F16
/// scale d = max|x| / 127 and 32 signed bytes q = round(x / d), read back as d·q. Bit for bit ggml's reference
/// quantizer (`quantize_row_q8_0_ref`, and gguf-py's `Q8_0`): x is multiplied by 1/d in F32 and rounded half away
/// from zero, and the scale is rounded to F16 to nearest-even only when stored.
public enum Q8_0 {
    /// Values per block.
    public static let blockSize = 32
    /// Bytes per block: the F16 scale, then the 32 quantized values.
    public static let blockBytes = 34

    /// Quantizes `count` floats (a multiple of `blockSize`) into `count / blockSize` blocks at `out`. A block
    /// holding a NaN or an infinity gets a NaN or infinite scale, as ggml's, and zeros for every value.
    public static func quantize(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        precondition(count % blockSize == 0, "Q8_0 quantizes whole blocks of \(blockSize) values, not \(count)")
        for block in 0..<count / blockSize {
            let values = x + block * blockSize, bytes = out + block * blockBytes
            var amax: Float = 0, sawNaN = false
            for j in 0..<blockSize {
                let a = abs(values[j])
                if a > amax { amax = a }
                if a.isNaN { sawNaN = true }
            }
            let d = sawNaN ? .nan : amax / 127
            let inverse: Float = d != 0 ? 1 / d : 0
            bytes.storeBytes(of: HalfConversion.f16Bits(d).littleEndian, toByteOffset: 0, as: UInt16.self)
            for j in 0..<blockSize {
                let scaled = (values[j] * inverse).rounded(.toNearestOrAwayFromZero)
                let q: Int8 = scaled.isFinite ? Int8(Swift.max(-128, Swift.min(127, scaled))) : 0
                bytes.storeBytes(of: q, toByteOffset: 2 + j, as: Int8.self)
            }
        }
    }

    /// Reads `count` values (a multiple of `blockSize`) back from the blocks at `bytes`.
    public static func dequantize(_ bytes: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(count % blockSize == 0, "Q8_0 holds whole blocks of \(blockSize) values, not \(count)")
        for block in 0..<count / blockSize {
            let source = bytes + block * blockBytes
            let d = HalfConversion.float(fromF16: UInt16(littleEndian: source.loadUnaligned(as: UInt16.self)))
            for j in 0..<blockSize {
                out[block * blockSize + j] = d * Float(source.loadUnaligned(fromByteOffset: 2 + j, as: Int8.self))
            }
        }
    }
}
