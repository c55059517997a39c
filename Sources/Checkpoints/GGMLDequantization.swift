/// Reads llama.cpp's quantized blocks back to F32, bit for bit as gguf-py's `gguf.quants.dequantize` (and ggml's
/// `dequantize_row_*`) does it, so that a model quantized by llama.cpp can be fine-tuned here.
///
/// Each format stores a row in whole blocks; `count` is always a multiple of the block size. Layouts are ggml's
/// `block_*` structs (`ggml-common.h`), offsets in bytes; in the K-quants a "group" is 32 consecutive values of the
/// 256. The code follows gguf-py's order of operations (a sub-block's scale d·sc first, then (d·sc)·q − dmin·m),
/// though the order cannot change a bit: an F16 scale (11 significant bits) times a sub-block scale (at most 7)
/// times a code (at most 6) is exact in F32, so only the final ± m rounds, once in any order and with or without a
/// fused multiply-add. Q8_0, which LoRAKit also writes, is in GGMLQuantization.swift.
///
/// Cost: one pass over the blocks, no allocation: 0.6 (Q6_K) to 2.5 (Q4_0, Q4_K) billion values a second on one
/// core, so a 7B model takes 3 to 12 seconds.
public enum GGMLDequantization {
    /// Reads `count` values of the quantized `type` from the blocks at `bytes` into `out`.
    public static func dequantize(_ type: GGMLType, _ bytes: UnsafeRawPointer, count: Int,
                                  into out: UnsafeMutablePointer<Float>) {
        precondition(count % type.blockSize == 0, "\(type.ggmlName) holds whole blocks of \(type.blockSize) values, not \(count)")
        let blocks = bytes.assumingMemoryBound(to: UInt8.self), blockCount = count / type.blockSize
        switch type {
        case .q4_0: q4_0(blocks, blockCount: blockCount, into: out)
        case .q4_1: q4_1(blocks, blockCount: blockCount, into: out)
        case .q5_0: q5_0(blocks, blockCount: blockCount, into: out)
        case .q5_1: q5_1(blocks, blockCount: blockCount, into: out)
        case .q8_0: Q8_0.dequantize(bytes, count: count, into: out)
        case .q2_K: q2_K(blocks, blockCount: blockCount, into: out)
        case .q3_K: q3_K(blocks, blockCount: blockCount, into: out)
        case .q4_K: q4_K(blocks, blockCount: blockCount, into: out)
        case .q5_K: q5_K(blocks, blockCount: blockCount, into: out)
        case .q6_K: q6_K(blocks, blockCount: blockCount, into: out)
        case .f32, .f16, .bf16: preconditionFailure("\(type.ggmlName) is not a block-quantized type")
        }
    }

    /// Q4_0, 32 values in 18 bytes: d (F16) @0, 16 bytes of 4-bit codes @2 (value j in the low nibble of byte j,
    /// value 16 + j in its high nibble). x = d·(q − 8).
    static func q4_0(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 18, y = out + block * 32
            let d = f16(b, 0), qs = b + 2
            for j in 0..<16 {
                y[j] = d * Float(Int(qs[j] & 0x0F) - 8)
                y[j + 16] = d * Float(Int(qs[j] >> 4) - 8)
            }
        }
    }

    /// Q4_1, 32 values in 20 bytes: d (F16) @0, m (F16) @2, 16 bytes of 4-bit codes @4 (as Q4_0). x = d·q + m.
    static func q4_1(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 20, y = out + block * 32
            let d = f16(b, 0), m = f16(b, 2), qs = b + 4
            for j in 0..<16 {
                y[j] = d * Float(qs[j] & 0x0F) + m
                y[j + 16] = d * Float(qs[j] >> 4) + m
            }
        }
    }

    /// Q5_0, 32 values in 22 bytes: d (F16) @0, the fifth bits (u32, bit j for value j) @2, the low 4 bits @6 (as
    /// Q4_0). x = d·(q − 16).
    static func q5_0(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 22, y = out + block * 32
            let d = f16(b, 0), qh = u32(b, 2), qs = b + 6
            for j in 0..<16 {
                let low = Int(qs[j] & 0x0F) | Int((qh >> j) & 1) << 4
                let high = Int(qs[j] >> 4) | Int((qh >> (j + 16)) & 1) << 4
                y[j] = d * Float(low - 16)
                y[j + 16] = d * Float(high - 16)
            }
        }
    }

    /// Q5_1, 32 values in 24 bytes: d (F16) @0, m (F16) @2, the fifth bits (u32) @4, the low 4 bits @8 (as Q5_0).
    /// x = d·q + m.
    static func q5_1(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 24, y = out + block * 32
            let d = f16(b, 0), m = f16(b, 2), qh = u32(b, 4), qs = b + 8
            for j in 0..<16 {
                let low = qs[j] & 0x0F | UInt8((qh >> j) & 1) << 4
                let high = qs[j] >> 4 | UInt8((qh >> (j + 16)) & 1) << 4
                y[j] = d * Float(low) + m
                y[j + 16] = d * Float(high) + m
            }
        }
    }

    /// Q2_K, 256 values in 84 bytes: 16 sub-block bytes @0 (scale in the low nibble, min in the high nibble, one per
    /// 16 values), 64 bytes of 2-bit codes @16, d (F16) @80, dmin (F16) @82. Group g (0..<8) takes bits 2·(g % 4)
    /// of code bytes 32·(g / 4) ..< +32. x = (d·scale)·q − dmin·min.
    static func q2_K(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 84, y = out + block * 256
            let scales = b, d = f16(b, 80), dmin = f16(b, 82)
            for group in 0..<8 {
                let codes = b + 16 + 32 * (group / 4), shift = UInt8(2 * (group % 4))
                for sub in 0..<2 {
                    let packed = scales[2 * group + sub]
                    let dl = d * Float(packed & 0x0F), ml = dmin * Float(packed >> 4)
                    for l in 16 * sub..<16 * sub + 16 { y[32 * group + l] = dl * Float((codes[l] >> shift) & 3) - ml }
                }
            }
        }
    }

    /// Q3_K, 256 values in 110 bytes: the third bits @0 (32 bytes; value 32·g + l has bit g of byte l, and a SET
    /// bit means no offset), 64 bytes of 2-bit codes @32 (as Q2_K), 16 six-bit scales packed in 12 bytes @96
    /// (scale i: low 4 bits in byte i % 8, low nibble for i < 8, high nibble after; high 2 bits at bits 2·(i / 4) of
    /// byte 8 + i % 4), d (F16) @108. x = (d·(scale − 32))·(q − (third bit ? 0 : 4)).
    static func q3_K(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 110, y = out + block * 256
            let hmask = b, packed = b + 96, d = f16(b, 108)
            for group in 0..<8 {
                let codes = b + 32 + 32 * (group / 4), shift = UInt8(2 * (group % 4))
                for sub in 0..<2 {
                    let i = 2 * group + sub
                    let low = i < 8 ? packed[i] & 0x0F : packed[i - 8] >> 4
                    let high = (packed[8 + i % 4] >> UInt8(2 * (i / 4))) & 3
                    let dl = d * Float(Int(low | high << 4) - 32)
                    for l in 16 * sub..<16 * sub + 16 {
                        let q = Int((codes[l] >> shift) & 3) - ((hmask[l] >> UInt8(group)) & 1 == 1 ? 0 : 4)
                        y[32 * group + l] = dl * Float(q)
                    }
                }
            }
        }
    }

    /// Q4_K, 256 values in 144 bytes: d (F16) @0, dmin (F16) @2, 8 six-bit scales and 8 six-bit mins packed in 12
    /// bytes @4 (`scaleAndMin`, one pair per group), 128 bytes of 4-bit codes @16: groups 2k and 2k + 1 are the low
    /// and high nibbles of bytes 32·k ..< +32. x = (d·scale)·q − dmin·min.
    static func q4_K(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 144, y = out + block * 256
            let d = f16(b, 0), dmin = f16(b, 2)
            for group in 0..<8 {
                let (scale, min) = scaleAndMin(b + 4, group)
                let dl = d * Float(scale), ml = dmin * Float(min)
                let codes = b + 16 + 32 * (group / 2), shift = UInt8(4 * (group % 2))
                for l in 0..<32 { y[32 * group + l] = dl * Float((codes[l] >> shift) & 0x0F) - ml }
            }
        }
    }

    /// Q5_K, 256 values in 176 bytes: d (F16) @0, dmin (F16) @2, scales and mins @4 (as Q4_K), the fifth bits @16
    /// (32 bytes; value 32·g + l has bit g of byte l), the low 4 bits @48 (as Q4_K). x = (d·scale)·q − dmin·min.
    static func q5_K(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 176, y = out + block * 256
            let d = f16(b, 0), dmin = f16(b, 2), qh = b + 16
            for group in 0..<8 {
                let (scale, min) = scaleAndMin(b + 4, group)
                let dl = d * Float(scale), ml = dmin * Float(min)
                let codes = b + 48 + 32 * (group / 2), shift = UInt8(4 * (group % 2))
                for l in 0..<32 {
                    let q = (codes[l] >> shift) & 0x0F | ((qh[l] >> UInt8(group)) & 1) << 4
                    y[32 * group + l] = dl * Float(q) - ml
                }
            }
        }
    }

    /// Q6_K, 256 values in 210 bytes: the low 4 bits @0 (128 bytes), the high 2 bits @128 (64 bytes), 16 signed
    /// byte scales @192 (one per 16 values), d (F16) @208. Each half h of 128 values uses low-bit bytes 64·h ..< +64
    /// and high-bit bytes 32·h ..< +32: its value 32·g + l (g < 4) has the low nibble (g < 2) or high nibble of
    /// low-bit byte 32·(g % 2) + l, and bits 2·g of high-bit byte l. x = (d·scale)·(q − 32).
    static func q6_K(_ blocks: UnsafePointer<UInt8>, blockCount: Int, into out: UnsafeMutablePointer<Float>) {
        for block in 0..<blockCount {
            let b = blocks + block * 210, d = f16(b, 208)
            for half in 0..<2 {
                let ql = b + 64 * half, qh = b + 128 + 32 * half, scales = b + 192 + 8 * half
                let y = out + block * 256 + 128 * half
                for group in 0..<4 {
                    let low = ql + 32 * (group % 2), lowShift = UInt8(4 * (group / 2)), highShift = UInt8(2 * group)
                    for sub in 0..<2 {
                        let dl = d * Float(Int8(bitPattern: scales[2 * group + sub]))
                        for l in 16 * sub..<16 * sub + 16 {
                            let q = (low[l] >> lowShift) & 0x0F | ((qh[l] >> highShift) & 3) << 4
                            y[32 * group + l] = dl * Float(Int(q) - 32)
                        }
                    }
                }
            }
        }
    }

    /// The 6-bit scale and min of group j (0..<8) of a Q4_K or Q5_K block, packed in the 12 bytes at `p`: for
    /// j < 4 the low 6 bits of bytes j (scale) and j + 4 (min); for j ≥ 4 the low (scale) and high (min) nibble of
    /// byte j + 4, with the top 2 bits of bytes j − 4 (scale) and j (min) above them (ggml's `get_scale_min_k4`).
    static func scaleAndMin(_ p: UnsafePointer<UInt8>, _ j: Int) -> (scale: UInt8, min: UInt8) {
        if j < 4 { return (p[j] & 63, p[j + 4] & 63) }
        return ((p[j + 4] & 0x0F) | (p[j - 4] >> 6) << 4, (p[j + 4] >> 4) | (p[j] >> 6) << 4)
    }

    /// The little-endian F16 at byte `offset` of `p`, widened exactly.
    @inline(__always)
    private static func f16(_ p: UnsafePointer<UInt8>, _ offset: Int) -> Float {
        HalfConversion.float(fromF16: UInt16(p[offset]) | UInt16(p[offset + 1]) << 8)
    }

    /// The little-endian u32 at byte `offset` of `p`.
    @inline(__always)
    private static func u32(_ p: UnsafePointer<UInt8>, _ offset: Int) -> UInt32 {
        UInt32(p[offset]) | UInt32(p[offset + 1]) << 8 | UInt32(p[offset + 2]) << 16 | UInt32(p[offset + 3]) << 24
    }
}
