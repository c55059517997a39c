import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// How `lora combine` makes one adapter from several (PEFT's `add_weighted_adapter` combination types).
public enum CombineMethod: String, CaseIterable, Sendable {
    /// Stack the adapters: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …]. Exact (ΔW = Σ wᵢsᵢBᵢAᵢ); rank = Σ rᵢ.
    case cat
    /// Average the factors: A = Σ ±√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ. Cheap, rank unchanged, but ΔW gains cross terms
    /// BᵢAⱼ: an approximation (exact for one adapter).
    case linear
    /// The best rank-R approximation of ΔW = Σ wᵢsᵢBᵢAᵢ: B = U·S, A = Vᵀ of its truncated SVD.
    case svd
}

/// Combining PEFT adapters of one base into one adapter, with PEFT's `add_weighted_adapter` semantics.
///
/// As PEFT: one adapter always combines as `linear`; the result has `lora_alpha = r`, so its scale is 1 and the
/// weights and scales of the inputs live in its tensors; `cat` pads every module to the full rank Σ rᵢ with zeros
/// (rᵢ = the adapter's largest rank, `rank_pattern` included); `linear` needs adapters of equal rank; `svd` uses
/// `svdRank`, by default the largest input rank. Unlike PEFT, the result adapts exactly the union of the inputs'
/// modules (PEFT takes `layers_to_transform` from the first adapter only and fails on modules no input has), and
/// never inherits `use_rslora` (PEFT keeps the first adapter's, which would rescale the combined tensors).
public enum AdapterCombination {
    /// One adapter from `sets` (all for one base), each weighted by `weights[i]`; `names` label errors.
    public static func combine(_ sets: [AdapterSet], weights: [Double], method requested: CombineMethod,
                               svdRank: Int? = nil, names: [String]? = nil) throws -> AdapterSet {
        guard let first = sets.first else { throw LoRAKitError("no adapter to combine: give at least one --adapter DIR:WEIGHT") }
        guard weights.count == sets.count else { throw LoRAKitError("\(sets.count) adapters but \(weights.count) weights") }
        let dims = first.dims
        func name(_ i: Int) -> String { names?[i] ?? "adapter \(i + 1)" }
        for (i, set) in sets.enumerated() where set.dims != dims {
            throw LoRAKitError("\(name(i)) was built for another base model than \(name(0)) (\(set.dims.layers) vs \(dims.layers) layers, hidden \(set.dims.dim) vs \(dims.dim))")
        }
        if let bad = sets.firstIndex(where: \.isDoRA) {
            // PEFT's add_weighted_adapter has no rule for magnitudes either: combining them would be made up.
            throw LoRAKitError("\(name(bad)) is a DoRA adapter (use_dora): combining DoRA magnitudes is not supported; merge it into the base with `lora merge` instead")
        }
        if let bad = weights.firstIndex(where: { !$0.isFinite }) { throw LoRAKitError("the weight of \(name(bad)) is not finite") }
        let method = sets.count == 1 ? .linear : requested
        let maxRanks = sets.map { set in ([set.config.r] + Array(set.config.rankPattern.values)).max() ?? set.config.r }

        let sites = Array(Set(sets.flatMap { $0.adapters.map(\.site) })).sorted()
        var rankOf: [AdapterSite: Int] = [:]
        let uniformRank: Int
        switch method {
        case .cat:
            uniformRank = maxRanks.reduce(0, +)
            for site in sites { rankOf[site] = uniformRank }
        case .linear:
            if Set(maxRanks).count > 1 {
                throw LoRAKitError("linear combination needs adapters of the same rank, got \(maxRanks.map(String.init).joined(separator: ", ")); use --method cat or svd")
            }
            for site in sites {
                let ranks = sets.enumerated().compactMap { i, set in set.adapter(layer: site.layer, projection: site.projection).map { (i, $0.rank) } }
                if let (i, r) = ranks.first(where: { $0.1 != ranks[0].1 }) {
                    throw LoRAKitError("linear combination needs equal ranks: \(site.moduleName) has rank \(ranks[0].1) in \(name(ranks[0].0)) and \(r) in \(name(i)); use --method cat or svd")
                }
                rankOf[site] = ranks[0].1
            }
            uniformRank = maxRanks.max() ?? first.config.r
        case .svd:
            uniformRank = svdRank ?? maxRanks.max() ?? first.config.r
            guard uniformRank > 0 else { throw LoRAKitError("--svd-rank must be positive, got \(uniformRank)") }
            for site in sites {
                let f = site.projection.features(dims)
                guard uniformRank <= min(f.inFeatures, f.outFeatures) else {
                    throw LoRAKitError("--svd-rank \(uniformRank) exceeds the size of \(site.moduleName) (\(f.outFeatures)×\(f.inFeatures))")
                }
                rankOf[site] = uniformRank
            }
        }

        let config = try combinedConfig(from: first.config, sites: sites, ranks: rankOf, rank: uniformRank, dims: dims)
        let result = try AdapterSet(config: config, dims: dims, initialization: .kaiming)
        guard result.adapters.map(\.site) == sites else {
            throw LoRAKitError("internal error: the combined adapter_config.json selects other modules than the inputs have")
        }
        for out in result.adapters {
            let site = out.site
            let inputs = sets.enumerated().compactMap { i, set in set.adapter(layer: site.layer, projection: site.projection).map { (lora: $0, weight: weights[i]) } }
            out.a.zero(); out.b.zero()
            switch method {
            case .cat: fillCat(out, inputs)
            case .linear: fillLinear(out, inputs)
            case .svd: fillSVD(out, inputs)
            }
        }
        return result
    }

    /// cat: A rows [offset, offset + rᵢ) = (Aᵢ·wᵢ)·sᵢ, B columns the same range = Bᵢ; the rest stays zero.
    static func fillCat(_ out: LoRALinear, _ inputs: [(lora: LoRALinear, weight: Double)]) {
        var offset = 0
        for (lora, weight) in inputs {
            // Float arithmetic in PEFT's order: (A * weight) * scaling.
            let w = Float(weight), s = lora.scale * lora.multiplier
            for r in 0..<lora.rank {
                for c in 0..<lora.inFeatures { out.a[(offset + r) * out.inFeatures + c] = lora.a[r * lora.inFeatures + c] * w * s }
            }
            for row in 0..<lora.outFeatures {
                for r in 0..<lora.rank { out.b[row * out.rank + offset + r] = lora.b[row * lora.rank + r] }
            }
            offset += lora.rank
        }
    }

    /// linear: A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ (the sign on one side only).
    static func fillLinear(_ out: LoRALinear, _ inputs: [(lora: LoRALinear, weight: Double)]) {
        for (lora, weight) in inputs {
            let ws = weight * Double(lora.scale) * Double(lora.multiplier)
            let root = Float(abs(ws).squareRoot())
            let wA = ws >= 0 ? root : -root
            for i in 0..<out.a.count { out.a[i] += lora.a[i] * wA }
            for i in 0..<out.b.count { out.b[i] += lora.b[i] * root }
        }
    }

    /// svd: the top-r SVD of Σ wᵢ·sᵢ·Bᵢ·Aᵢ, B = U·S, A = Vᵀ.
    static func fillSVD(_ out: LoRALinear, _ inputs: [(lora: LoRALinear, weight: Double)]) {
        let k = inputs.reduce(0) { $0 + $1.lora.rank }
        var left = LowRankSVD.Matrix(rows: out.outFeatures, cols: k), right = LowRankSVD.Matrix(rows: k, cols: out.inFeatures)
        var offset = 0
        for (lora, weight) in inputs {
            let c = weight * Double(lora.scale) * Double(lora.multiplier)
            for row in 0..<lora.outFeatures { for r in 0..<lora.rank { left[row, offset + r] = c * Double(lora.b[row * lora.rank + r]) } }
            for r in 0..<lora.rank { for col in 0..<lora.inFeatures { right[offset + r, col] = Double(lora.a[r * lora.inFeatures + col]) } }
            offset += lora.rank
        }
        let (us, vt) = LowRankSVD.truncated(left: left, right: right, rank: out.rank)
        for i in 0..<out.b.count { out.b[i] = Float(us.values[i]) }
        for i in 0..<out.a.count { out.a[i] = Float(vt.values[i]) }
    }

    /// The combined adapter's config: PEFT's (`r = lora_alpha = rank`, the first adapter's other settings) with
    /// targets naming exactly `sites`: projection names plus `layers_to_transform` when the sites are every chosen
    /// projection on every chosen layer, otherwise full module names. Modules of another rank get
    /// `rank_pattern`/`alpha_pattern` entries equal to it, so every scale stays 1.
    static func combinedConfig(from first: LoRAConfig, sites: [AdapterSite], ranks: [AdapterSite: Int], rank: Int,
                               dims: ModelDimensions) throws -> LoRAConfig {
        let projections = Set(sites.map(\.projection)).sorted(), layers = Set(sites.map(\.layer)).sorted()
        let isGrid = sites.count == projections.count * layers.count
        var config = LoRAConfig(
            r: rank, loraAlpha: Double(rank), loraDropout: first.loraDropout,
            targetModules: .list(isGrid ? projections.map(\.hfName) : sites.map(\.moduleName)),
            useRslora: false,
            layersToTransform: isGrid && layers != Array(0..<dims.layers) ? layers : nil,
            initLoraWeights: first.initLoraWeights, baseModelNameOrPath: first.baseModelNameOrPath)
        for site in sites where ranks[site] != rank {
            let r = ranks[site] ?? rank
            config.rankPattern[site.moduleName] = r
            config.alphaPattern[site.moduleName] = Double(r)
        }
        try config.validate()
        return config
    }

    /// `lora combine`: loads `adapterArguments` (`DIR:WEIGHT`, weight 1 when omitted) for the model `base` (a
    /// directory or GGUF file) — by default the first adapter's `base_model_name_or_path`, when that is a model
    /// here — combines them and writes the PEFT adapter directory `out` atomically (refused if it exists,
    /// unless `overwrite`).
    public static func combine(adapterArguments: [String], base chosenBase: String?, method: CombineMethod,
                               svdRank: Int? = nil, out: String, overwrite: Bool = false) throws -> AdapterSet {
        try ModelExport.checkOutput(out, overwrite: overwrite)
        var parsed: [(directory: String, weight: Double)] = []
        for argument in adapterArguments {
            let (directory, weight) = try AdapterSet.parseAdapterArgument(argument)
            // The weight again in Double: PEFT's weights are Python floats, and √|w·s| feeds the tensors.
            let suffix = argument.lastIndex(of: ":").map { String(argument[argument.index(after: $0)...]) }
            parsed.append((directory, suffix.flatMap { Double($0) } ?? Double(weight)))
        }
        guard let firstDirectory = parsed.first?.directory else {
            throw LoRAKitError("no adapter to combine: give at least one --adapter DIR:WEIGHT")
        }
        let base: String
        if let chosenBase {
            base = chosenBase
        } else {
            let named = AdapterDirectory.peftType(firstDirectory) == AdaLoRAConfig.peftTypeName
                ? try AdaLoRAConfig.load(path: LoRAConfig.joinPath(firstDirectory, LoRAConfig.fileName)).baseModelNameOrPath
                : try LoRAConfig.load(directory: firstDirectory).baseModelNameOrPath
            guard let path = named, BaseModel.isGGUF(path) ? FileManager.default.fileExists(atPath: path)
                    : FileManager.default.fileExists(atPath: LoRAConfig.joinPath(path, "config.json")) else {
                throw LoRAKitError.file(firstDirectory, "its base_model_name_or_path (\(named ?? "none")) is not a model directory here; pass --base DIR")
            }
            base = path
        }
        let dims = ModelDimensions(try BaseModel.config(base))
        let sets = try parsed.map { try AdapterSet.loadFactors(directory: $0.directory, dims: dims) }
        let combined = try combine(sets, weights: parsed.map(\.weight), method: method, svdRank: svdRank,
                                   names: parsed.map(\.directory))
        try AtomicFile.writeDirectory(at: out, overwrite: overwrite) { temporary in
            try combined.save(to: temporary, baseModelPath: base)
        }
        return combined
    }
}
