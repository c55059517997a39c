import Foundation
import Tensors

/// AdamW with PyTorch's semantics (`torch.optim.AdamW`), over one flat parameter buffer.
///
/// Decoupled weight decay `p -= lr·wd·p` comes first, then the bias-corrected Adam step with ε added to √v̂.
/// The moments have the parameters' layout, so the whole update is one loop.
public final class AdamW {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float
    /// First and second moments, (P) each.
    public let firstMoment: Tensor
    public let secondMoment: Tensor
    /// Updates taken so far.
    public var step = 0
    /// A learning-rate factor per parameter (LoRA+: B and magnitudes at ratio × lr), nil for 1 everywhere. Weight
    /// decay uses each parameter's own rate, as a PyTorch parameter group does.
    public var learningRateScale: Tensor?

    public init(parameterCount: Int, weightDecay: Float) {
        self.weightDecay = weightDecay
        firstMoment = Tensor(shape: [parameterCount])
        secondMoment = Tensor(shape: [parameterCount])
    }

    /// One update of `parameters` from `gradients` at learning rate `lr`.
    public func update(parameters: Tensor, gradients: Tensor, lr: Float) {
        precondition(parameters.count == firstMoment.count && gradients.count == firstMoment.count)
        step += 1
        let b1 = beta1, b2 = beta2, eps = epsilon
        // torch: step_size = lr / bias_correction1; denom = sqrt(v) / sqrt(bias_correction2) + eps
        let correction1 = 1 - Float(pow(Double(b1), Double(step)))
        let correction2Root = Float(sqrt(1 - pow(Double(b2), Double(step))))
        let stepSize = lr / correction1
        let p = parameters.data, g = gradients.data, m = firstMoment.data, v = secondMoment.data
        let scale = learningRateScale?.data, wd = weightDecay
        parallelFor(parameters.count, minChunk: 4096) { range in
            for i in range {
                // a factor of 1 leaves every product exact: without a scale this is the plain update, bit for bit
                let s = scale?[i] ?? 1
                p[i] *= 1 - lr * s * wd
                m[i] = b1 * m[i] + (1 - b1) * g[i]
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                p[i] -= stepSize * s * m[i] / (v[i].squareRoot() / correction2Root + eps)
            }
        }
    }
}

/// Scales `gradients` so their global L2 norm is at most `maxNorm` (as `torch.nn.utils.clip_grad_norm_`);
/// returns the norm before clipping. `maxNorm` 0 only measures.
@discardableResult
public func clipGradientNorm(_ gradients: Tensor, maxNorm: Float) -> Float {
    let norm = Float(Elementwise.sumOfSquares(gradients.data, count: gradients.count).squareRoot())
    if maxNorm > 0 && norm.isFinite {
        let coefficient = maxNorm / (norm + 1e-6)
        if coefficient < 1 { Elementwise.scale(gradients.data, count: gradients.count, by: coefficient) }
    }
    return norm
}
