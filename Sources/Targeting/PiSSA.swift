import MiniGPT
import Tensors

/// PiSSA (principal singular values and vectors adaptation, Meng et al. 2024) as PEFT's `init_lora_weights="pissa"`
/// (peft/tuners/lora/layer.py, `pissa_init`).
///
/// With W = U S Vᵀ (out, in) and s the adapter's scale, the adapter starts as the top-r part of W,
///     A = diag(√(S_r / s)) V_rᵀ  (r, in),   B = U_r diag(√(S_r / s))  (out, r),   so s·B·A = U_r S_r V_rᵀ,
/// and training runs on the frozen residual W_res = W − s·B₀·A₀: at step 0 the model is unchanged, and the adapter
/// trains the principal directions. The adapter only means something on that residual, so it is saved as PEFT's
/// `save_pretrained(path_initial_model_for_weight_conversion=…)` does: a plain LoRA adapter of rank 2r for the
/// ORIGINAL base, A' = [A; A₀] and B' = [B, −B₀] (s·B'·A' = s·B·A − s·B₀·A₀ = the change of W), with r and alpha
/// doubled (alpha × √2 with rsLoRA) so the scale is unchanged. `lora merge`, `lora forward` and PEFT then use it
/// on the original model, and `--resume` rebuilds the residual from A₀ and B₀ found in it.
public enum PiSSA {
    /// Fills `adapter`'s A and B from the SVD of its base projection `weight` (out, in): exact (`.pissa`), or
    /// randomized with the sketch drawn from `rng` (`.pissaFast`, PEFT's `pissa_niter_K`).
    static func initialize(_ adapter: LoRALinear, weight: Tensor, initialization: AdapterInitialization,
                           rng: inout RandomGenerator) throws {
        let module = adapter.site.moduleName
        let k = min(adapter.inFeatures, adapter.outFeatures), r = adapter.rank
        guard r <= k else {
            throw LoRAKitError("PiSSA initialisation of \(module): rank \(r) exceeds min(in, out) = \(k) of the [\(adapter.outFeatures), \(adapter.inFeatures)] weight; use --rank \(k) or less")
        }
        let (u, s, vt): (Tensor, [Float], Tensor)
        if case .pissaFast(let iterations) = initialization {
            (u, s, vt) = try SVD.randomized(weight, rank: r, powerIterations: iterations, rng: &rng)
        } else {
            (u, s, vt) = try SVD.thin(weight)
        }
        let inF = adapter.inFeatures, outF = adapter.outFeatures, uColumns = u.shape[1]
        for j in 0..<r {
            // PEFT: Sr /= scaling; A = diag(√Sr) Vhr; B = Vr diag(√Sr)
            let root = (s[j] / adapter.scale).squareRoot()
            for i in 0..<inF { adapter.a.data[j * inF + i] = root * vt.data[j * inF + i] }
            for o in 0..<outF { adapter.b.data[o * r + j] = u.data[o * uColumns + j] * root }
        }
    }

    /// W − s·B₀·A₀ (out, in): the frozen base PiSSA trains on. One function for the first run and for `--resume`,
    /// so both get the same bits from the same A₀ and B₀.
    static func residual(weight: Tensor, a0: Tensor, b0: Tensor, scale: Float) -> Tensor {
        let outF = b0.shape[0], r = b0.shape[1], inF = a0.shape[1]
        let out = weight.clone()
        // (out, in) −= s · B₀ (out, r) · A₀ (r, in)
        GEMM.sgemm(transA: false, transB: false, m: outF, n: inF, k: r, alpha: -scale, a: b0.data, lda: r,
                   b: a0.data, ldb: inF, beta: 1, c: out.data, ldc: inF)
        return out
    }

    /// The config of the converted adapter: rank and alpha doubled (alpha × √2 with rsLoRA), patterns doubled,
    /// `init_lora_weights` true — PEFT's `save_pretrained` with `path_initial_model_for_weight_conversion`.
    static func convertedConfig(_ config: LoRAConfig) -> LoRAConfig {
        var converted = config
        converted.initLoraWeights = .flag(true)
        converted.r = 2 * config.r
        converted.loraAlpha = config.useRslora ? config.loraAlpha * 2.0.squareRoot() : 2 * config.loraAlpha
        converted.rankPattern = config.rankPattern.mapValues { 2 * $0 }
        converted.alphaPattern = config.alphaPattern.mapValues { 2 * $0 }
        return converted
    }

    /// A' = [A; A₀] (2r, in) and B' = [B, −B₀] (out, 2r) of one adapter.
    static func convertedTensors(_ adapter: LoRALinear, a0: Tensor, b0: Tensor) -> (a: Tensor, b: Tensor) {
        let r = adapter.rank, inF = adapter.inFeatures, outF = adapter.outFeatures
        let a = Tensor(shape: [2 * r, inF]), b = Tensor(shape: [outF, 2 * r])
        a.data.update(from: adapter.a.data, count: r * inF)
        (a.data + r * inF).update(from: a0.data, count: r * inF)
        for o in 0..<outF {
            for j in 0..<r {
                b.data[o * 2 * r + j] = adapter.b.data[o * r + j]
                b.data[o * 2 * r + r + j] = -b0.data[o * r + j]
            }
        }
        return (a, b)
    }
}

extension AdapterSet {
    /// The base the set trains on: for PiSSA the residual W − s·B₀·A₀ of every adapted projection (new tensors;
    /// the rest shared with `weights`), otherwise `weights` itself.
    ///
    /// With a `quantization` (PiSSA on an F32 `weights` for a quantized run: QPiSSA, Meng et al. §4.4) every
    /// projection is then stored that way, a block at a time: the residuals, whose largest singular directions
    /// moved into the adapter, and the untouched projections as they are.
    public func trainingBase(_ weights: LlamaWeights, quantization: BaseQuantization = .none) throws -> LlamaWeights {
        guard let initial = pissaInitial else {
            precondition(quantization == .none, "trainingBase quantizes only a PiSSA residual base")
            return weights
        }
        guard weights.dims == dims else { throw LoRAKitError("the PiSSA adapter was built for another model") }
        let layers = try weights.layers.enumerated().map { l, layer -> LayerWeights in
            let projections = try Projection.allCases.map { p -> FrozenWeight in
                let label = "model.layers.\(l).\(p.modulePath).weight"
                guard let adapter = adapter(layer: l, projection: p) else {
                    // Untouched projections stay as stored (shared), or are quantized as loaded ones would be.
                    return quantization == .none ? layer.frozen(p) : try quantization.store(layer.projection(p), label: label)
                }
                let (a0, b0) = initialTensors(of: adapter, in: initial)
                let residual = PiSSA.residual(weight: layer.projection(p), a0: a0, b0: b0, scale: adapter.scale)
                return try quantization.store(residual, label: label + " (PiSSA residual)")
            }
            return LayerWeights(attentionNorm: layer.attentionNorm, ffnNorm: layer.ffnNorm, projections: projections)
        }
        return LlamaWeights(config: weights.config, embedding: weights.embedding, layers: layers,
                            finalNorm: weights.finalNorm, lmHead: weights.lmHead)
    }

    /// Views of A₀ and B₀ of `adapter` in `initial` (a buffer with the layout of `parameters`).
    func initialTensors(of adapter: LoRALinear, in initial: Tensor) -> (a0: Tensor, b0: Tensor) {
        let aOffset = adapter.a.data - parameters.data, bOffset = adapter.b.data - parameters.data
        return (Tensor(borrowing: initial.data + aOffset, shape: adapter.a.shape, owner: initial),
                Tensor(borrowing: initial.data + bOffset, shape: adapter.b.shape, owner: initial))
    }

    /// Continues a PiSSA run from its saved (converted, rank 2r) adapter: A, B are the first r rows / columns, A₀
    /// and −B₀ the last r. `config` is the run's own rank-r PiSSA config.
    public static func resumePiSSA(directory: String, config: LoRAConfig, dims: ModelDimensions,
                                   seed: UInt64 = 0) throws -> AdapterSet {
        let saved = try AdapterSet.load(directory: directory, dims: dims, seed: seed)
        let set = try AdapterSet(config: config, dims: dims, initialization: .kaiming, seed: seed)
        let initial = Tensor(shape: [set.parameters.count])
        for adapter in set.adapters {
            let site = adapter.site
            guard let stored = saved.adapter(layer: site.layer, projection: site.projection),
                  stored.rank == 2 * adapter.rank else {
                throw LoRAKitError.file(directory, "is not the rank-\(2 * config.r) adapter a PiSSA run saves for \(site.moduleName); was the run started with another --rank or --targets?")
            }
            let r = adapter.rank, inF = adapter.inFeatures, outF = adapter.outFeatures
            let (a0, b0) = set.initialTensors(of: adapter, in: initial)
            adapter.a.data.update(from: stored.a.data, count: r * inF)
            a0.data.update(from: stored.a.data + r * inF, count: r * inF)
            for o in 0..<outF {
                for j in 0..<r {
                    adapter.b.data[o * r + j] = stored.b.data[o * 2 * r + j]
                    b0.data[o * r + j] = -stored.b.data[o * 2 * r + r + j]
                }
            }
        }
        set.pissaInitial = initial
        return set
    }
}
