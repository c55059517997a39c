/// Root-mean-square layer normalization, as `LlamaRMSNorm`: `out = weight · (x · rsqrt(mean(x²) + eps))`.
///
/// Legend: rows = B·T, dim = D. The forward saves `rstd` (one per row) for the backward.
public enum RMSNorm {
    /// Normalizes each row of `input` and scales it by `weight`.
    ///
    /// input is (rows, dim), weight is (dim) -> out is (rows, dim), rstd is (rows).
    /// `out` may alias `input`.
    public static func forward(out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                               input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               rows: Int, dim: Int, eps: Float) {
        parallelFor(rows, minChunk: max(1, 16_384 / max(dim, 1))) { range in
            for r in range {
                let x = input + r * dim, y = out + r * dim
                // HF: variance = x.pow(2).mean(-1); x * torch.rsqrt(variance + eps)
                let meanSquare = dotProduct(x, x, count: dim) / Float(dim)
                let s = 1 / (meanSquare + eps).squareRoot()
                rstd[r] = s
                for i in 0..<dim { y[i] = weight[i] * (x[i] * s) }
            }
        }
    }

    /// Gradients of `forward`; ACCUMULATES into `dInput` and, unless it is nil (a frozen weight), into `dWeight`.
    ///
    /// dOut, input are (rows, dim), weight is (dim), rstd is (rows) from the forward
    /// -> dInput (rows, dim) +=, dWeight (dim) +=.
    /// With n = x·rstd and g = dOut·weight: dx = rstd · (g − n · mean(g·n)), dWeight = Σ_rows dOut·n.
    /// dInput rows are split over threads; dWeight columns are split over threads, each column summed over
    /// rows in order, so the result does not depend on the thread count.
    public static func backward(dInput: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                                dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                                weight: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                rows: Int, dim: Int) {
        parallelFor(rows, minChunk: max(1, 8_192 / max(dim, 1))) { range in
            for r in range {
                let x = input + r * dim, dy = dOut + r * dim, dx = dInput + r * dim
                let s = rstd[r]
                // mean(g·n) = rstd · Σ dOut·w·x / dim
                let gx = tripleProduct(dy, weight, x, count: dim)
                let c = gx * s * s / Float(dim)
                for i in 0..<dim { dx[i] += s * (dy[i] * weight[i] - x[i] * c) }
            }
        }
        guard let dWeight else { return }
        // out = weight · n  =>  dWeight[i] = Σ_r dOut[r, i] · x[r, i] · rstd[r]
        parallelFor(dim, minChunk: 64) { columns in
            for r in 0..<rows {
                let x = input + r * dim, dy = dOut + r * dim
                let s = rstd[r]
                for i in columns { dWeight[i] += dy[i] * (x[i] * s) }
            }
        }
    }
}
