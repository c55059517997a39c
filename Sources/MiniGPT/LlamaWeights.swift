import Checkpoints
import Foundation
import Tensors

/// One block's parameters, HF layout: projections are `[out, in]`, norms `[dim]`.
///
/// The same type holds weight gradients and optimizer moments, so every role shares one layout. A base loaded with
/// `--quantize nf4` keeps its seven projections as NF4 (`frozen(_:)`); the F32 accessors (`q`, `projection(_:)` …)
/// then return dequantized copies, for the rare code that needs F32 (merging, analysis), never for the model's
/// products.
public final class LayerWeights {
    public let attentionNorm: Tensor   // (D)
    public let ffnNorm: Tensor         // (D)
    /// q (H·hd, D), k and v (KVH·hd, D), o (D, H·hd), gate and up (F, D), down (D, F), in `Projection.allCases` order.
    private let projections: [FrozenWeight]

    public init(attentionNorm: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor,
                ffnNorm: Tensor, gate: Tensor, up: Tensor, down: Tensor) {
        self.attentionNorm = attentionNorm
        self.ffnNorm = ffnNorm
        self.projections = [q, k, v, o, gate, up, down].map { .f32($0) }
    }

    /// A block whose projections are stored as given, in `Projection.allCases` order.
    public init(attentionNorm: Tensor, ffnNorm: Tensor, projections: [FrozenWeight]) {
        precondition(projections.count == Projection.allCases.count, "a block has seven projections")
        self.attentionNorm = attentionNorm
        self.ffnNorm = ffnNorm
        self.projections = projections
    }

    public var q: Tensor { projection(.q) }
    public var k: Tensor { projection(.k) }
    public var v: Tensor { projection(.v) }
    public var o: Tensor { projection(.o) }
    public var gate: Tensor { projection(.gate) }
    public var up: Tensor { projection(.up) }
    public var down: Tensor { projection(.down) }

    /// Projection `p` as stored (F32 or NF4): what the model multiplies by.
    @inline(__always)
    public func frozen(_ p: Projection) -> FrozenWeight { projections[p.index] }

    /// Projection `p` as an F32 tensor (a dequantized copy when it is NF4).
    public func projection(_ p: Projection) -> Tensor { frozen(p).f32Tensor }

    /// Whether any projection is quantized.
    public var isQuantized: Bool { projections.contains { $0.isQuantized } }

    /// (HF name suffix, tensor) pairs in a fixed order (NF4 projections dequantized).
    public var named: [(String, Tensor)] {
        [("input_layernorm.weight", attentionNorm),
         ("self_attn.q_proj.weight", q), ("self_attn.k_proj.weight", k),
         ("self_attn.v_proj.weight", v), ("self_attn.o_proj.weight", o),
         ("post_attention_layernorm.weight", ffnNorm),
         ("mlp.gate_proj.weight", gate), ("mlp.up_proj.weight", up), ("mlp.down_proj.weight", down)]
    }
}

/// All parameters of a LLaMA model.
public final class LlamaWeights {
    public let config: LlamaConfig
    public let dims: ModelDimensions
    public let embedding: Tensor       // (V, D)
    public let layers: [LayerWeights]
    public let finalNorm: Tensor       // (D)
    /// (V, D); the embedding itself when tied.
    public let lmHead: Tensor

    public init(config: LlamaConfig, embedding: Tensor, layers: [LayerWeights], finalNorm: Tensor, lmHead: Tensor) {
        self.config = config
        self.dims = ModelDimensions(config)
        self.embedding = embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.lmHead = lmHead
    }

    /// The HF tensor name → shape map of a model of `config` (the LM head only when untied).
    public static func expectedShapes(_ config: LlamaConfig) -> [(name: String, shape: [Int])] {
        let d = ModelDimensions(config)
        var out: [(String, [Int])] = [("model.embed_tokens.weight", [d.vocab, d.dim])]
        for l in 0..<d.layers {
            let p = "model.layers.\(l)."
            out += [(p + "input_layernorm.weight", [d.dim]),
                    (p + "self_attn.q_proj.weight", [d.qDim, d.dim]),
                    (p + "self_attn.k_proj.weight", [d.kvDim, d.dim]),
                    (p + "self_attn.v_proj.weight", [d.kvDim, d.dim]),
                    (p + "self_attn.o_proj.weight", [d.dim, d.qDim]),
                    (p + "post_attention_layernorm.weight", [d.dim]),
                    (p + "mlp.gate_proj.weight", [d.ffnDim, d.dim]),
                    (p + "mlp.up_proj.weight", [d.ffnDim, d.dim]),
                    (p + "mlp.down_proj.weight", [d.dim, d.ffnDim])]
        }
        out.append(("model.norm.weight", [d.dim]))
        if !d.tiedEmbeddings { out.append(("lm_head.weight", [d.vocab, d.dim])) }
        return out
    }

    /// Builds a model from `tensor(name, shape)`, which supplies each HF tensor, in the order of `expectedShapes`.
    public static func assemble(config: LlamaConfig, _ tensor: (String, [Int]) throws -> Tensor) rethrows -> LlamaWeights {
        let d = ModelDimensions(config)
        let embedding = try tensor("model.embed_tokens.weight", [d.vocab, d.dim])
        var layers: [LayerWeights] = []
        for l in 0..<d.layers {
            let p = "model.layers.\(l)."
            layers.append(LayerWeights(
                attentionNorm: try tensor(p + "input_layernorm.weight", [d.dim]),
                q: try tensor(p + "self_attn.q_proj.weight", [d.qDim, d.dim]),
                k: try tensor(p + "self_attn.k_proj.weight", [d.kvDim, d.dim]),
                v: try tensor(p + "self_attn.v_proj.weight", [d.kvDim, d.dim]),
                o: try tensor(p + "self_attn.o_proj.weight", [d.dim, d.qDim]),
                ffnNorm: try tensor(p + "post_attention_layernorm.weight", [d.dim]),
                gate: try tensor(p + "mlp.gate_proj.weight", [d.ffnDim, d.dim]),
                up: try tensor(p + "mlp.up_proj.weight", [d.ffnDim, d.dim]),
                down: try tensor(p + "mlp.down_proj.weight", [d.dim, d.ffnDim])))
        }
        let finalNorm = try tensor("model.norm.weight", [d.dim])
        let lmHead = d.tiedEmbeddings ? embedding : try tensor("lm_head.weight", [d.vocab, d.dim])
        return LlamaWeights(config: config, embedding: embedding, layers: layers, finalNorm: finalNorm, lmHead: lmHead)
    }

    /// Builds a model whose projections are stored as `quantization` says, one tensor at a time: each projection is
    /// quantized as soon as `tensor` supplies it and the F32 tensor is dropped, so no F32 copy of all projections
    /// ever exists. `tensor` is called in the order of `expectedShapes`.
    public static func assemble(config: LlamaConfig, quantization: BaseQuantization,
                                _ tensor: (String, [Int]) throws -> Tensor) throws -> LlamaWeights {
        if quantization == .none { return try assemble(config: config, tensor) }
        let d = ModelDimensions(config)
        let embedding = try tensor("model.embed_tokens.weight", [d.vocab, d.dim])
        var layers: [LayerWeights] = []
        for l in 0..<d.layers {
            let p = "model.layers.\(l)."
            let attentionNorm = try tensor(p + "input_layernorm.weight", [d.dim])
            var projections: [FrozenWeight] = []
            var ffnNorm: Tensor?
            for projection in Projection.allCases {
                if projection == .gate { ffnNorm = try tensor(p + "post_attention_layernorm.weight", [d.dim]) }
                let f = projection.features(d)
                let name = p + projection.modulePath + ".weight"
                projections.append(try quantization.store(try tensor(name, [f.outFeatures, f.inFeatures]), label: name))
            }
            layers.append(LayerWeights(attentionNorm: attentionNorm, ffnNorm: ffnNorm ?? attentionNorm,
                                       projections: projections))
        }
        let finalNorm = try tensor("model.norm.weight", [d.dim])
        let lmHead = d.tiedEmbeddings ? embedding : try tensor("lm_head.weight", [d.vocab, d.dim])
        return LlamaWeights(config: config, embedding: embedding, layers: layers, finalNorm: finalNorm, lmHead: lmHead)
    }

    /// Loads a Hugging Face Llama directory: `config.json` and `model.safetensors` (or a sharded index).
    ///
    /// F32 tensors are used straight from the memory map; F16 and BF16 are converted once. With `quantization`
    /// the seven projections are quantized one by one as they are read (from F32, F16 or BF16), and the pages of the
    /// memory map they came from are released.
    ///
    /// `inMemory` copies every F32 tensor out of the memory map into memory of its own (huge pages, see
    /// `Tensor`) and releases the map's pages one tensor at a time, so the resident size stays that of one model.
    /// It costs one copy at load time and pays off when every weight is read once per token (generation).
    public static func load(directory: String, quantization: BaseQuantization = .none,
                            inMemory: Bool = false) throws -> LlamaWeights {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw LoRAKitError.file(directory, "no such model directory (expected config.json, model.safetensors, tokenizer.model)")
        }
        guard FileManager.default.fileExists(atPath: directory + "/config.json") else {
            throw LoRAKitError.file(directory, "no config.json: not a Hugging Face model directory" + ggufHint(directory))
        }
        let config = try LlamaConfig.load(from: directory + "/config.json")
        let store = try WeightStore(directory: directory)
        func fetch(_ name: String, _ shape: [Int]) throws -> Tensor {
            let tensor = try store.tensor(name, shape: shape)
            guard inMemory && !tensor.ownsMemory else { return tensor }
            let copy = tensor.clone()
            store.releasePages(of: name)   // no view of these bytes is left: `tensor` is dropped on return
            return copy
        }
        if quantization == .none { return try assemble(config: config, fetch) }
        let projections = Set(expectedShapes(config).map(\.name).filter { name in
            Projection.allCases.contains { name.hasSuffix("." + $0.modulePath + ".weight") }
        })
        var previous: String?
        return try assemble(config: config, quantization: quantization) { name, shape in
            // the projection handed out last has been quantized by now: its F32 pages are not needed any more
            if let previous { store.releasePages(of: previous) }
            previous = projections.contains(name) ? name : nil
            return previous == nil ? try fetch(name, shape) : try store.tensor(name, shape: shape)
        }
    }

    /// For a directory without config.json that holds llama.cpp files: which to give as `--base` instead.
    static func ggufHint(_ directory: String) -> String {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.lowercased().hasSuffix(".gguf") }.sorted()
        guard let first = files.first else { return "" }
        return " (it holds \(files.count == 1 ? first : "\(files.count) GGUF files, \(first) …"): give a GGUF file itself as --base)"
    }

    /// A model of zeros in one contiguous buffer (for gradients and optimizer moments, or to be initialised).
    ///
    /// Tensors are views into `storage`, so the whole set is one flat array for AdamW and clipping.
    public static func zeros(config: LlamaConfig) -> (weights: LlamaWeights, storage: Tensor) {
        let shapes = expectedShapes(config)
        let total = shapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let storage = Tensor(shape: [total])
        var offset = 0
        var views: [String: Tensor] = [:]
        for (name, shape) in shapes {
            views[name] = Tensor(borrowing: storage.data + offset, shape: shape, owner: storage)
            offset += shape.reduce(1, *)
        }
        // Every name of expectedShapes is present, so the lookup cannot fail.
        let weights = assemble(config: config) { name, _ in views[name]! }
        return (weights, storage)
    }

    /// A randomly initialised model, as `transformers` does: N(0, 0.02²) matrices, unit norms.
    public static func random(config: LlamaConfig, seed: UInt64) -> (weights: LlamaWeights, storage: Tensor) {
        let (w, storage) = zeros(config: config)
        var rng = RandomGenerator(seed: seed)
        for (name, t) in w.named {
            if name.hasSuffix("norm.weight") { t.data.update(repeating: 1, count: t.count) }
            else { rng.fillNormal(t.data, count: t.count, std: 0.02) }
        }
        return (w, storage)
    }

    /// The model of `random(config:seed:)` (the same values) with its projections stored as `quantization` says,
    /// built one tensor at a time so that the F32 projections never exist all at once.
    public static func random(config: LlamaConfig, seed: UInt64, quantization: BaseQuantization) throws -> LlamaWeights {
        var rng = RandomGenerator(seed: seed)
        // same order and draws as `random(config:seed:)`: `named` follows `expectedShapes`, norms draw nothing
        return try assemble(config: config, quantization: quantization) { name, shape in
            let t = Tensor(shape: shape)
            if name.hasSuffix("norm.weight") { t.data.update(repeating: 1, count: t.count) }
            else { rng.fillNormal(t.data, count: t.count, std: 0.02) }
            return t
        }
    }

    /// Every distinct tensor with its HF name (the LM head only when untied).
    public var named: [(String, Tensor)] {
        var out: [(String, Tensor)] = [("model.embed_tokens.weight", embedding)]
        for (l, layer) in layers.enumerated() {
            out += layer.named.map { ("model.layers.\(l).\($0.0)", $0.1) }
        }
        out.append(("model.norm.weight", finalNorm))
        if !dims.tiedEmbeddings { out.append(("lm_head.weight", lmHead)) }
        return out
    }

    /// Total number of parameters.
    public var parameterCount: Int { Self.expectedShapes(config).reduce(0) { $0 + $1.shape.reduce(1, *) } }

    /// Whether the projections are quantized (`--quantize nf4`).
    public var isQuantized: Bool { layers.contains { $0.isQuantized } }

    /// Bytes of the seven projections of every block as stored, and what they would take in F32.
    public var projectionBytes: (stored: Int, f32: Int) {
        var stored = 0, f32 = 0
        for layer in layers {
            for p in Projection.allCases {
                stored += layer.frozen(p).storageBytes
                f32 += layer.frozen(p).count * MemoryLayout<Float>.stride
            }
        }
        return (stored, f32)
    }

    /// Writes the model as a Hugging Face directory's `model.safetensors` and `config.json` (atomically each).
    public func save(directory: String) throws {
        try SafeTensorsWriter.write(named.map { (name: $0.0, tensor: $0.1) }, metadata: ["format": "pt"],
                                    to: directory + "/model.safetensors")
        try config.write(to: directory + "/config.json")
    }
}
