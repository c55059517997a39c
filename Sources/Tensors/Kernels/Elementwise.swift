/// Elementwise vector operations (residual adds, gradient scaling, norms).
///
/// Plain loops without reductions are vectorized by the compiler; the reduction uses explicit SIMD lanes.
public enum Elementwise {
    /// a, b are (count) -> out = a + b. `out` may alias `a` or `b`.
    public static func add(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                           count: Int) {
        parallelFor(count, minChunk: 65_536) { range in
            for i in range { out[i] = a[i] + b[i] }
        }
    }

    /// x is (count) -> acc += x.
    public static func addInPlace(_ acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        parallelFor(count, minChunk: 65_536) { range in
            for i in range { acc[i] += x[i] }
        }
    }

    /// x is (count) -> x *= factor.
    public static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        parallelFor(count, minChunk: 65_536) { range in
            for i in range { x[i] *= factor }
        }
    }

    /// x is (rows, columns), factors is (columns) -> out[r, c] = x[r, c] · (factors[c] + offset): each column
    /// scaled by its own factor (DoRA's c = m / ‖W + s·B·A‖ per output, with offset −1 for c − 1).
    public static func scaleColumns(out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                    by factors: UnsafePointer<Float>, offset: Float = 0, rows: Int, columns: Int) {
        parallelFor(rows, minChunk: 16) { range in
            for row in range {
                let start = row * columns
                for c in 0..<columns { out[start + c] = x[start + c] * (factors[c] + offset) }
            }
        }
    }

    /// Σ x², for the global gradient norm. Serial and blocked: F32 lanes over 4,096 floats, blocks added in
    /// Double, so a sum over millions of parameters keeps its precision and does not depend on threads.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var total: Double = 0
        var start = 0
        while start < count {
            let n = min(4_096, count - start)
            total += Double(dotProduct(x + start, x + start, count: n))
            start += n
        }
        return total
    }
}
