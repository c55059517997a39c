import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// Folding LoRA adapters into a base model: `W' = W + Σₖ mₖ·sₖ·Bₖ·Aₖ` for every adapted projection, in F32.
///
/// Merging is what lets an adapter run where LoRA is not supported: the merged model has the base's shapes
/// and computes (up to float rounding) what the base with the adapters attached computes.
public enum AdapterMerge {
    /// A model whose adapted projections are `W + Σ deltas` (each adapter's multiplier included).
    ///
    /// Only the adapted projections are new buffers; every other tensor is shared with `base`, so merging a
    /// q/v adapter into a memory-mapped 7B model costs the size of the q and v matrices, not of the model.
    /// Refuses an empty list, an adapter built for other dimensions, and an adapter whose every B is zero (it
    /// would change nothing: most likely an untrained adapter).
    public static func merge(base: LlamaWeights, adapters: [any AttachableAdapters], names: [String]? = nil) throws -> LlamaWeights {
        guard !adapters.isEmpty else { throw LoRAKitError("no adapter to merge: give at least one --adapter") }
        for (i, set) in adapters.enumerated() {
            let name = names?[i] ?? "adapter \(i + 1)"
            guard set.dims == base.dims else {
                throw LoRAKitError("\(name) was built for another model (\(set.dims.layers) layers, hidden \(set.dims.dim)); the base has \(base.dims.layers) layers, hidden \(base.dims.dim)")
            }
            if let problem = set.mergeProblem { throw LoRAKitError("\(name) is empty: \(problem)") }
        }
        let layers = base.layers.enumerated().map { l, layer -> LayerWeights in
            func merged(_ projection: Projection) -> Tensor {
                let weight = layer.projection(projection)
                let sets = adapters.filter { $0.adapts(layer: l, projection: projection) }
                guard !sets.isEmpty else { return weight }
                let out = weight.clone()
                for set in sets { set.addMergedUpdate(layer: l, projection: projection, to: out, base: weight) }
                return out
            }
            return LayerWeights(attentionNorm: layer.attentionNorm, q: merged(.q), k: merged(.k), v: merged(.v),
                                o: merged(.o), ffnNorm: layer.ffnNorm, gate: merged(.gate), up: merged(.up),
                                down: merged(.down))
        }
        return LlamaWeights(config: base.config, embedding: base.embedding, layers: layers,
                            finalNorm: base.finalNorm, lmHead: base.lmHead)
    }

    /// weight[out, in] += m·s · B (out, r) · A (r, in), in place: one GEMM, no delta buffer.
    ///
    /// A DoRA adapter adds c ⊙ (W + s·B·A) − W with W = `base`, the unmerged projection (its norm is the base's, as
    /// in the forward, also when other adapters were merged first): alone, the result is PEFT's c ⊙ (W + s·B·A).
    static func addDelta(of lora: LoRALinear, to weight: Tensor, base: Tensor) {
        precondition(weight.shape == [lora.outFeatures, lora.inFeatures], "merge: \(weight.shape) vs adapter")
        if lora.isDoRA {
            lora.bindBase(base)
            let delta = lora.deltaWeight()
            for i in 0..<weight.count { weight.data[i] += delta.data[i] }
            return
        }
        GEMM.sgemm(transA: false, transB: false, m: lora.outFeatures, n: lora.inFeatures, k: lora.rank,
                   alpha: lora.effectiveScale, a: lora.b.data, lda: lora.rank, b: lora.a.data, ldb: lora.inFeatures,
                   beta: 1, c: weight.data, ldc: lora.inFeatures)
    }

    /// The tokens of the self-check forward: BOS then `count - 1` ids spread over the vocabulary.
    public static func checkTokens(_ config: LlamaConfig, count: Int = 8) -> [Int32] {
        let vocab = config.vocabSize
        return [Int32(config.bosTokenId)] + (1..<max(count, 2)).map { Int32(($0 * 7919 + 3) % vocab) }
    }

    /// Max |Δlogit| between `base` with `adapters` attached and `merged`, on `tokens`, and the largest |logit|
    /// of the former (to judge the difference against).
    ///
    /// Runs two forwards on fresh models, so models the caller holds are not touched.
    public static func logitDifference(base: LlamaWeights, adapters: [any AttachableAdapters], merged: LlamaWeights,
                                       tokens: [Int32]) throws -> (maxDifference: Float, maxLogit: Float) {
        let adapted = LlamaModel(weights: base)
        for set in adapters { try set.attach(to: adapted) }
        let batch = TokenBatch(sequences: [tokens])
        let expected = try adapted.logits(batch)
        let got = try LlamaModel(weights: merged).logits(batch)
        var difference: Float = 0, largest: Float = 0
        for i in 0..<expected.count {
            let d = abs(expected[i] - got[i])
            // A NaN must fail the check, and max() would drop it.
            difference = d.isNaN || difference.isNaN ? .nan : max(difference, d)
            largest = max(largest, abs(expected[i]))
        }
        return (difference, largest)
    }

    /// The first tensor of `written` that is not bit-for-bit `expected` rounded to `dtype`, as an error message;
    /// nil when the file holds exactly what was meant to be written. With `vectorsStayF32` (GGUF keeps norms in
    /// F32 whatever the matrices' type) 1-D tensors are compared unrounded.
    public static func firstMismatch(written: LlamaWeights, expected: LlamaWeights, dtype: DType,
                                     vectorsStayF32: Bool = false) -> String? {
        firstMismatch(written: written, expected: expected) { shape in
            vectorsStayF32 && shape.count == 1 ? .f32 : GGMLType(dtype)
        }
    }

    /// The first tensor element of `written` that is not `expected`'s stored as `storage(shape)` and read back
    /// (rounded to F16/BF16, or quantized to Q8_0 blocks and dequantized), or nil when every one is.
    public static func firstMismatch(written: LlamaWeights, expected: LlamaWeights,
                                     storage: ([Int]) -> GGMLType) -> String? {
        for ((name, got), (_, want)) in zip(written.named, expected.named) {
            guard got.shape == want.shape else { return "\(name) has shape \(got.shape), expected \(want.shape)" }
            let target = Tensor(shape: want.shape)
            storage(want.shape).roundTrip(want.data, count: want.count, into: target.data)
            for i in 0..<want.count where got[i].bitPattern != target[i].bitPattern && !(got[i].isNaN && target[i].isNaN) {
                return "\(name)[\(i)] is \(got[i]), expected \(target[i])"
            }
        }
        return nil
    }
}
