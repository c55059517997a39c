import Checkpoints
import Foundation
import Tensors

/// One block's parameters, HF layout: projections are `[out, in]`, norms `[dim]`.
///
/// The same type holds weight gradients and optimizer moments, so every role shares one layout.
public final class LayerWeights {
    public let attentionNorm: Tensor   // (D)
    public let q: Tensor               // (H·hd, D)
    public let k: Tensor               // (KVH·hd, D)
    public let v: Tensor               // (KVH·hd, D)
    public let o: Tensor               // (D, H·hd)
    public let ffnNorm: Tensor         // (D)
    public let gate: Tensor            // (F, D)
    public let up: Tensor              // (F, D)
    public let down: Tensor            // (D, F)

    public init(attentionNorm: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor,
                ffnNorm: Tensor, gate: Tensor, up: Tensor, down: Tensor) {
        self.attentionNorm = attentionNorm
        self.q = q; self.k = k; self.v = v; self.o = o
        self.ffnNorm = ffnNorm
        self.gate = gate; self.up = up; self.down = down
    }

    public func projection(_ p: Projection) -> Tensor {
        switch p {
        case .q: return q
        case .k: return k
        case .v: return v
        case .o: return o
        case .gate: return gate
        case .up: return up
        case .down: return down
        }
    }

    /// (HF name suffix, tensor) pairs in a fixed order.
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

    /// Builds a model from `tensor(name, shape)`, which supplies each HF tensor.
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

    /// Loads a Hugging Face Llama directory: `config.json` and `model.safetensors` (or a sharded index).
    ///
    /// F32 tensors are used straight from the memory map; F16 and BF16 are converted once.
    public static func load(directory: String) throws -> LlamaWeights {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw LoRAKitError.file(directory, "no such model directory (expected config.json, model.safetensors, tokenizer.model)")
        }
        guard FileManager.default.fileExists(atPath: directory + "/config.json") else {
            throw LoRAKitError.file(directory, "no config.json: not a Hugging Face model directory")
        }
        let config = try LlamaConfig.load(from: directory + "/config.json")
        let store = try WeightStore(directory: directory)
        return try assemble(config: config) { name, shape in try store.tensor(name, shape: shape) }
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
    public var parameterCount: Int { named.reduce(0) { $0 + $1.1.count } }

    /// Writes the model as a Hugging Face directory's `model.safetensors` and `config.json` (atomically each).
    public func save(directory: String) throws {
        try SafeTensorsWriter.write(named.map { (name: $0.0, tensor: $0.1) }, metadata: ["format": "pt"],
                                    to: directory + "/model.safetensors")
        try config.write(to: directory + "/config.json")
    }
}
