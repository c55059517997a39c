import CKernels

/// The gated activation of the LLaMA feed-forward block: `out = silu(gate) · up`, silu(x) = x · sigmoid(x).
///
/// gate and up are the outputs of `gate_proj` and `up_proj`, (rows, F) each, flattened to `count` floats.
public enum SwiGLU {
    /// gate and up are (count) -> out is (count). `out` may alias `gate` or `up`.
    public static func forward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                               up: UnsafePointer<Float>, count: Int) {
        parallelFor(count, minChunk: 16_384) { range in
            // AVX2 where the CPU has it, these lanes in Swift otherwise; the scalar loop takes the tail
            var i = range.lowerBound + lk_swiglu_forward(out + range.lowerBound, gate + range.lowerBound,
                                                         up + range.lowerBound, range.count)
            while i + 8 <= range.upperBound {
                let g = loadLanes(gate, i)
                // torch's silu: x / (1 + exp(-x))
                storeLanes(g / (1 + expLanes(-g)) * loadLanes(up, i), out, i)
                i += 8
            }
            while i < range.upperBound {
                let g = gate[i]
                out[i] = g / (1 + expScalar(-g)) * up[i]
                i += 1
            }
        }
    }

    /// Gradients of `forward`. OVERWRITES dGate and dUp (they are fresh per layer, nothing to add to).
    ///
    /// dOut, gate, up are (count) -> dGate, dUp are (count).
    /// d silu(g)/dg = σ(g) · (1 + g · (1 − σ(g))).
    public static func backward(dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>,
                                dOut: UnsafePointer<Float>, gate: UnsafePointer<Float>,
                                up: UnsafePointer<Float>, count: Int) {
        parallelFor(count, minChunk: 16_384) { range in
            let lo = range.lowerBound
            var i = lo + lk_swiglu_backward(dGate + lo, dUp + lo, dOut + lo, gate + lo, up + lo, range.count)
            while i + 8 <= range.upperBound {
                let g = loadLanes(gate, i), u = loadLanes(up, i), dy = loadLanes(dOut, i)
                let sigmoid = 1 / (1 + expLanes(-g))
                storeLanes(dy * u * sigmoid * (1 + g * (1 - sigmoid)), dGate, i)
                storeLanes(dy * g * sigmoid, dUp, i)
                i += 8
            }
            while i < range.upperBound {
                let g = gate[i], u = up[i], dy = dOut[i]
                let sigmoid = 1 / (1 + expScalar(-g))
                dGate[i] = dy * u * sigmoid * (1 + g * (1 - sigmoid))
                dUp[i] = dy * g * sigmoid
                i += 1
            }
        }
    }
}
