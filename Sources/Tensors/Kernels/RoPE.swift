import Foundation

/// Cosines and sines of the rotary position embedding, precomputed for every position.
///
/// The angles are computed exactly as transformers' `LlamaRotaryEmbedding` does in F32 —
/// `inv_freq = 1 / theta ** (arange(0, hd, 2) / hd)` in Float, `angle = Float(pos) · inv_freq` in Float —
/// so that they match it bit for bit; only cos/sin themselves are rounded from Double (≤ 1 ulp apart).
public struct RoPETable: Sendable {
    public let headDim: Int
    public let maxPositions: Int
    /// cos and sin are (maxPositions, headDim / 2).
    public let cos: [Float]
    public let sin: [Float]

    /// Precomputes the table for positions `0..<maxPositions`; `headDim` must be even.
    public init(headDim: Int, maxPositions: Int, theta: Double) {
        precondition(headDim > 0 && headDim % 2 == 0, "RoPE needs an even head dimension, got \(headDim)")
        self.headDim = headDim
        self.maxPositions = maxPositions
        let half = headDim / 2
        let base = Double(Float(theta))
        let inverseFrequency: [Float] = (0..<half).map { i in
            let exponent = Float(2 * i) / Float(headDim)
            return 1 / Float(Foundation.pow(base, Double(exponent)))
        }
        var cosTable = [Float](repeating: 0, count: maxPositions * half)
        var sinTable = cosTable
        for p in 0..<maxPositions {
            for i in 0..<half {
                let angle = Double(Float(p) * inverseFrequency[i])
                cosTable[p * half + i] = Float(Foundation.cos(angle))
                sinTable[p * half + i] = Float(Foundation.sin(angle))
            }
        }
        cos = cosTable
        sin = sinTable
    }
}

/// Rotary position embedding with transformers' `rotate_half` convention.
///
/// Within each head, element i < hd/2 pairs with element i + hd/2:
/// (x1, x2) -> (x1·cos − x2·sin, x2·cos + x1·sin) at angle pos · inv_freq[i].
public enum RoPE {
    /// Rotates every head of every row IN PLACE.
    ///
    /// x is (rows, heads·headDim), positions is (rows) -> x rotated.
    public static func forward(x: UnsafeMutablePointer<Float>, positions: UnsafePointer<Int32>,
                               rows: Int, heads: Int, headDim: Int, table: RoPETable) {
        rotate(x, positions: positions, rows: rows, heads: heads, headDim: headDim, table: table, sign: 1)
    }

    /// Gradient of `forward`, IN PLACE on `dx`: the transpose rotation (angle −pos · inv_freq[i]).
    ///
    /// dx is (rows, heads·headDim), positions is (rows) -> dx rotated back.
    public static func backward(dx: UnsafeMutablePointer<Float>, positions: UnsafePointer<Int32>,
                                rows: Int, heads: Int, headDim: Int, table: RoPETable) {
        rotate(dx, positions: positions, rows: rows, heads: heads, headDim: headDim, table: table, sign: -1)
    }

    private static func rotate(_ x: UnsafeMutablePointer<Float>, positions: UnsafePointer<Int32>,
                               rows: Int, heads: Int, headDim: Int, table: RoPETable, sign: Float) {
        precondition(headDim == table.headDim, "RoPE table is for head dim \(table.headDim), not \(headDim)")
        let half = headDim / 2, width = heads * headDim
        table.cos.withUnsafeBufferPointer { cosTable in
            table.sin.withUnsafeBufferPointer { sinTable in
                guard let cosBase = cosTable.baseAddress, let sinBase = sinTable.baseAddress else { return }
                parallelFor(rows, minChunk: max(1, 8_192 / max(width, 1))) { range in
                    for r in range {
                        let p = Int(positions[r])
                        precondition(p >= 0 && p < table.maxPositions,
                                     "RoPE position \(p) outside the table's 0..<\(table.maxPositions)")
                        let c = cosBase + p * half, s = sinBase + p * half
                        for h in 0..<heads {
                            let x1 = x + r * width + h * headDim, x2 = x1 + half
                            for i in 0..<half {
                                let a = x1[i], b = x2[i], sn = sign * s[i]
                                // HF: q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q2, q1)
                                x1[i] = a * c[i] + (-b) * sn
                                x2[i] = b * c[i] + a * sn
                            }
                        }
                    }
                }
            }
        }
    }
}
