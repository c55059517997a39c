import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// A PEFT LoRA adapter as a llama.cpp GGUF adapter (`llama-cli --lora FILE`), as llama.cpp's
/// `convert_lora_to_gguf.py` writes it.
///
/// Metadata: `general.architecture = llama`, `general.type = adapter`, `adapter.type = lora`,
/// `adapter.lora.alpha` (F32). Tensors: `<base tensor>.lora_a` = A ([r, in], ggml ne [in, r]) and `.lora_b` = B
/// ([out, r]), q/k B rows reordered like the base's q/k (see `LlamaGGUF`).
///
/// llama.cpp scales every module by one `alpha / r_module` (r from the tensor). PEFT's per-module scale can
/// differ from that — rsLoRA (alpha/√r), `alpha_pattern`, a `--adapter DIR:WEIGHT` multiplier — so for those
/// modules B is multiplied by `s_module · r_module / alpha`: llama.cpp then computes exactly PEFT's `s·B·A`.
/// (llama.cpp's own converter ignores rsLoRA and the patterns.) Plain adapters are written unchanged.
public enum GGUFAdapterExport {
    /// What was written: the alpha stored, and the modules whose B was rescaled to carry their scale.
    public struct Report: Sendable {
        public let alpha: Float
        public let modules: Int
        public let rescaledModules: [String]
    }

    /// `lora export-adapter`: loads `adapterArgument` (`DIR` or `DIR:WEIGHT`) for the model `base` (a directory or GGUF file)
    /// (which fixes the shapes the adapter must have) and writes it to `out`, refused if `out` exists unless
    /// `overwrite`.
    public static func export(adapterArgument: String, base: String, out: String, type: GGMLType = .f32,
                              overwrite: Bool = false) throws -> Report {
        try ModelExport.checkOutput(out, overwrite: overwrite)
        let config = try BaseModel.config(base)
        let (directory, weight) = try AdapterSet.parseAdapterArgument(adapterArgument)
        let dims = ModelDimensions(config)
        if AdapterDirectory.peftType(directory) == AdaLoRAConfig.peftTypeName {
            let set = try AdaLoRASet.load(directory: directory, dims: dims)
            set.multiplier = weight
            if let problem = set.mergeProblem { throw LoRAKitError.file(directory, "the adapter is empty: \(problem)") }
            return try write(set, type: type, name: ModelExport.modelName(out), to: out)
        }
        let set = try AdapterSet.load(directory: directory, dims: dims)
        set.multiplier = weight
        if set.allBZero {
            throw LoRAKitError.file(directory, "the adapter is empty: every lora_B is zero, so it changes nothing (an untrained adapter?)")
        }
        return try write(set, type: type, name: ModelExport.modelName(out), to: out)
    }

    /// Writes `set` (loaded for a base of `dims`) to `path` atomically, tensors stored as `type`.
    @discardableResult
    public static func write(_ set: AdapterSet, type: GGMLType = .f32, name: String = "adapter",
                             to path: String) throws -> Report {
        guard !set.adapters.isEmpty else { throw LoRAKitError("refusing to export an empty adapter") }
        guard !set.isDoRA else {
            throw LoRAKitError("a DoRA adapter (use_dora) cannot be a llama.cpp LoRA: llama.cpp has no DoRA magnitudes; merge it into the base with `lora merge --format gguf` instead")
        }
        let modules = set.adapters.map { Module(site: $0.site, a: $0.a, b: $0.b, scale: $0.effectiveScale) }
        return try write(modules, alpha: Float(set.config.loraAlpha), dims: set.dims, type: type, name: name, to: path)
    }

    /// Writes an AdaLoRA adapter as the LoRA llama.cpp knows: each module's kept triplets become A' = diag(E)·A
    /// ([r, in]) and B, so llama.cpp's `alpha / r · B·A'` is PEFT's `s·B·diag(E)·A`. Modules that kept no triplet
    /// are left out.
    @discardableResult
    public static func write(_ set: AdaLoRASet, type: GGMLType = .f32, name: String = "adapter",
                             to path: String) throws -> Report {
        let modules = set.adapters.filter { $0.rank > 0 }.map {
            Module(site: $0.site, a: $0.eScaledA(), b: $0.b, scale: $0.effectiveScale)
        }
        guard !modules.isEmpty else { throw LoRAKitError("refusing to export an empty adapter: rank_pattern keeps no triplet") }
        return try write(modules, alpha: Float(set.config.loraAlpha), dims: set.dims, type: type, name: name, to: path)
    }

    /// One module as llama.cpp takes it: its update is `scale · B·A`, A [r, in] and B [out, r].
    struct Module {
        let site: AdapterSite
        let a: Tensor
        let b: Tensor
        let scale: Float
        var rank: Int { a.shape[0] }
    }

    private static func write(_ modules: [Module], alpha: Float, dims: ModelDimensions, type: GGMLType, name: String,
                              to path: String) throws -> Report {
        var writer = GGUFWriter()
        try writer.add("general.architecture", .string(LlamaGGUF.architecture))
        try writer.add("general.type", .string("adapter"))
        try writer.add("general.name", .string(name))
        try writer.add("adapter.type", .string("lora"))
        try writer.add("adapter.lora.alpha", .float32(alpha))
        var rescaled: [String] = []
        for module in modules {
            let site = module.site
            var b = LlamaGGUF.ropeHeads(site.projection, dims).map { LlamaGGUF.permuteRoPERows(module.b, heads: $0) } ?? module.b
            // llama.cpp applies alpha / r; the module needs its own scale.
            let factor = module.scale * Float(module.rank) / alpha
            if abs(factor - 1) > 1e-6 {
                if b === module.b { b = module.b.clone() }
                for i in 0..<b.count { b[i] *= factor }
                rescaled.append(site.moduleName)
            }
            let base = LlamaGGUF.tensorName(layer: site.layer, projection: site.projection)
            try writer.addTensor(base + ".lora_a", module.a, type: type)
            try writer.addTensor(base + ".lora_b", b, type: type)
        }
        try writer.write(to: path)
        return Report(alpha: alpha, modules: modules.count, rescaledModules: rescaled)
    }

    /// The merged update `s·B·A` ([out, in], Hugging Face row order) of every module in a GGUF adapter, as
    /// llama.cpp computes it: `alpha / r · B·A`, q/k rows restored. For checking an export against its source.
    public static func deltaWeights(_ file: GGUFFile, dims: ModelDimensions) throws -> [AdapterSite: Tensor] {
        guard try file.value("general.type") == .string("adapter"), try file.value("adapter.type") == .string("lora") else {
            throw LoRAKitError.file(file.path, "is not a LoRA adapter (general.type must be \"adapter\", adapter.type \"lora\")")
        }
        guard let alpha = try file.value("adapter.lora.alpha").real else {
            throw LoRAKitError.file(file.path, "adapter.lora.alpha is not a number")
        }
        var out: [AdapterSite: Tensor] = [:]
        for l in 0..<dims.layers {
            for p in Projection.allCases {
                let base = LlamaGGUF.tensorName(layer: l, projection: p)
                guard file.info(base + ".lora_a") != nil || file.info(base + ".lora_b") != nil else { continue }
                let a = try file.tensor(base + ".lora_a"), b = try file.tensor(base + ".lora_b")
                let f = p.features(dims)
                guard a.shape.count == 2, b.shape.count == 2, a.shape[1] == f.inFeatures, b.shape[0] == f.outFeatures,
                      a.shape[0] == b.shape[1] else {
                    throw LoRAKitError.file(file.path, "\(base): lora_a \(a.shape) and lora_b \(b.shape) do not fit [\(f.outFeatures), \(f.inFeatures)]")
                }
                let rank = a.shape[0]
                let delta = Tensor(shape: [f.outFeatures, f.inFeatures])
                GEMM.sgemm(transA: false, transB: false, m: f.outFeatures, n: f.inFeatures, k: rank,
                           alpha: Float(alpha) / Float(rank), a: b.data, lda: rank, b: a.data, ldb: f.inFeatures,
                           beta: 0, c: delta.data, ldc: f.inFeatures)
                out[AdapterSite(layer: l, projection: p)] =
                    LlamaGGUF.ropeHeads(p, dims).map { LlamaGGUF.permuteRoPERows(delta, heads: $0, inverse: true) } ?? delta
            }
        }
        return out
    }
}
