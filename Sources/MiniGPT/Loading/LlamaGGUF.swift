import Checkpoints
import Foundation
import Tensors

/// How a LLaMA model is laid out in GGUF for llama.cpp (architecture `llama`), as llama.cpp's
/// `convert_hf_to_gguf.py` (`LlamaModel`) writes it.
///
/// Two things differ from the Hugging Face layout:
/// - tensor names: `model.layers.N.self_attn.q_proj.weight` → `blk.N.attn_q.weight`, and so on;
/// - the rows of q_proj and k_proj. Hugging Face's RoPE rotates dimension i of a head with i + head_dim/2
///   ("rotate half"); llama.cpp's `llama` RoPE rotates neighbours 2i and 2i+1. The converter reorders each head's
///   rows so that llama.cpp's rotation meets the same pairs: new row `2i + j` of a head is old row
///   `j·head_dim/2 + i` (`permute` in the converter: reshape (heads, 2, hd/2, in), swap axes 1 and 2). A LoRA
///   adapter on q or k gets the same reordering of its B rows (W = B·A, so rows of W are rows of B).
public enum LlamaGGUF {
    /// The value of `general.architecture`.
    public static let architecture = "llama"

    /// llama.cpp's name of a projection's weight in block `layer`.
    public static func tensorName(layer: Int, projection: Projection) -> String {
        let short: String
        switch projection {
        case .q: short = "attn_q"
        case .k: short = "attn_k"
        case .v: short = "attn_v"
        case .o: short = "attn_output"
        case .gate: short = "ffn_gate"
        case .up: short = "ffn_up"
        case .down: short = "ffn_down"
        }
        return "blk.\(layer).\(short).weight"
    }

    /// Heads whose rows `projection` must be reordered by, or nil when its rows stay as they are.
    public static func ropeHeads(_ projection: Projection, _ dims: ModelDimensions) -> Int? {
        switch projection {
        case .q: return dims.heads
        case .k: return dims.kvHeads
        default: return nil
        }
    }

    /// Reorders the rows of `matrix` ([heads·hd, cols]) from Hugging Face's rotate-half RoPE layout to llama.cpp's
    /// interleaved one (`inverse`: back). Returns a new tensor.
    public static func permuteRoPERows(_ matrix: Tensor, heads: Int, inverse: Bool = false) -> Tensor {
        let rows = matrix.shape[0], cols = matrix.count / max(rows, 1)
        precondition(heads > 0 && rows % (2 * heads) == 0, "RoPE permutation: \(rows) rows for \(heads) heads")
        let headDim = rows / heads, half = headDim / 2
        let out = Tensor(shape: matrix.shape)
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    let hf = h * headDim + j * half + i, cpp = h * headDim + 2 * i + j
                    let (from, to) = inverse ? (cpp, hf) : (hf, cpp)
                    (out.data + to * cols).update(from: matrix.data + from * cols, count: cols)
                }
            }
        }
        return out
    }

    /// Every tensor of `weights` under llama.cpp's name, q/k rows reordered, in the converter's order.
    public static func tensors(of weights: LlamaWeights) -> [(name: String, tensor: Tensor)] {
        let dims = weights.dims
        var out: [(String, Tensor)] = [("token_embd.weight", weights.embedding)]
        for (l, layer) in weights.layers.enumerated() {
            out.append(("blk.\(l).attn_norm.weight", layer.attentionNorm))
            for p in [Projection.q, .k, .v, .o] {
                let w = layer.projection(p)
                out.append((tensorName(layer: l, projection: p), ropeHeads(p, dims).map { permuteRoPERows(w, heads: $0) } ?? w))
            }
            out.append(("blk.\(l).ffn_norm.weight", layer.ffnNorm))
            for p in [Projection.gate, .up, .down] { out.append((tensorName(layer: l, projection: p), layer.projection(p))) }
        }
        out.append(("output_norm.weight", weights.finalNorm))
        // Tied models have no output.weight: llama.cpp then uses token_embd as the LM head.
        if !dims.tiedEmbeddings { out.append(("output.weight", weights.lmHead)) }
        return out
    }

    /// The hyper-parameters llama.cpp reads for architecture `llama`, as the converter writes them.
    public static func hyperparameters(_ config: LlamaConfig) -> [(key: String, value: GGUFValue)] {
        let a = architecture
        return [
            ("\(a).block_count", .uint32(UInt32(config.numHiddenLayers))),
            ("\(a).context_length", .uint32(UInt32(config.maxPositionEmbeddings))),
            ("\(a).embedding_length", .uint32(UInt32(config.hiddenSize))),
            ("\(a).feed_forward_length", .uint32(UInt32(config.intermediateSize))),
            ("\(a).attention.head_count", .uint32(UInt32(config.numAttentionHeads))),
            ("\(a).attention.head_count_kv", .uint32(UInt32(config.numKeyValueHeads))),
            ("\(a).rope.freq_base", .float32(config.ropeTheta)),
            ("\(a).attention.layer_norm_rms_epsilon", .float32(config.rmsNormEps)),
            // Always written (the converter does when config.json has head_dim): llama.cpp otherwise derives
            // it as embedding_length / head_count, wrong for models with an explicit head_dim.
            ("\(a).attention.key_length", .uint32(UInt32(config.headDim))),
            ("\(a).attention.value_length", .uint32(UInt32(config.headDim))),
            ("\(a).vocab_size", .uint32(UInt32(config.vocabSize))),
            ("\(a).rope.dimension_count", .uint32(UInt32(config.headDim))),
        ]
    }

    /// How `writeModel` stores a tensor of `shape` when the matrices are asked for as `type`: norms (1-D) stay F32,
    /// as llama.cpp's converter keeps them (too small to be worth rounding); a matrix whose rows are not whole
    /// blocks of a quantized type falls back to F16, as the converter does.
    public static func storageType(shape: [Int], requested type: GGMLType) -> GGMLType {
        if shape.count == 1 { return .f32 }
        if let row = shape.last, row % type.blockSize != 0 { return .f16 }
        return type
    }

    /// Writes a llama.cpp model file: `general.*`, the hyper-parameters, the tokenizer and every tensor, each
    /// stored as `storageType(shape:requested:)` says. Atomic: a temporary file renamed into place.
    public static func writeModel(_ weights: LlamaWeights, vocabulary: GGUFVocabulary, type: GGMLType,
                                  name: String, to path: String) throws {
        guard vocabulary.tokens.count == weights.config.vocabSize else {
            throw LoRAKitError("the tokenizer has \(vocabulary.tokens.count) pieces but config.json's vocab_size is \(weights.config.vocabSize): llama.cpp needs one piece per embedding row")
        }
        var writer = GGUFWriter()
        try writer.add("general.architecture", .string(architecture))
        try writer.add("general.type", .string("model"))
        try writer.add("general.name", .string(name))
        for (key, value) in hyperparameters(weights.config) { try writer.add(key, value) }
        try writer.add("general.file_type", .uint32(type.fileType))
        for (key, value) in vocabulary.metadata { try writer.add(key, value) }
        for (tensorName, tensor) in tensors(of: weights) {
            try writer.addTensor(tensorName, tensor, type: storageType(shape: tensor.shape, requested: type))
        }
        try writer.write(to: path)
    }

    /// The hyper-parameters of a llama.cpp model file as a config.json would give them, checked: architecture
    /// `llama` (LLaMA 1–2, Mistral, TinyLlama …) without rope scaling or experts. The vocabulary size is the
    /// embedding's rows, the LM head is tied when the file has no `output.weight`, BOS/EOS are the tokenizer's.
    public static func config(of file: GGUFFile) throws -> LlamaConfig {
        func fail(_ message: String) -> LoRAKitError { LoRAKitError.file(file.path, message) }
        let arch = try file.value("general.architecture")
        guard arch == .string(architecture) else {
            throw fail("general.architecture is \(arch); LoRAKit reads LLaMA-architecture models (\"\(architecture)\") only")
        }
        func integer(_ key: String) throws -> Int? {
            guard let value = file.metadata["\(architecture).\(key)"] else { return nil }
            guard let n = value.integer, n > 0 else { throw fail("\(architecture).\(key) is \(value), expected a positive integer") }
            return n
        }
        func required(_ key: String) throws -> Int {
            guard let n = try integer(key) else { throw fail("has no metadata key \(architecture).\(key)") }
            return n
        }
        func real(_ key: String) throws -> Float? {
            guard let value = file.metadata["\(architecture).\(key)"] else { return nil }
            guard let x = value.real, x > 0, x.isFinite else { throw fail("\(architecture).\(key) is \(value), expected a positive number") }
            return Float(x)
        }
        if let experts = try integer("expert_count"), experts > 0 {
            throw fail("is a mixture of \(experts) experts; LoRAKit's LLaMA has one feed-forward network per block")
        }
        if let scaling = file.metadata["\(architecture).rope.scaling.type"], scaling != .string("none") {
            throw fail("uses rope scaling \(scaling) (\(architecture).rope.scaling.type); LoRAKit implements plain RoPE")
        }
        if file.info("rope_freqs.weight") != nil {
            throw fail("has rope_freqs.weight (LLaMA 3.1's rope scaling); LoRAKit implements plain RoPE")
        }
        guard let embedding = file.info("token_embd.weight"), embedding.shape.count == 2 else {
            throw fail("has no 2-D tensor token_embd.weight")
        }
        // each block is 9 tensors: a corrupt count is refused before anything is built for it
        let blocks = try required("block_count")
        guard blocks <= file.tensors.count / 9 else {
            throw fail("\(architecture).block_count is \(blocks), but the file holds \(file.tensors.count) tensors (9 per block)")
        }
        let vocabulary = try GGUFVocabulary(file: file)
        let heads = try required("attention.head_count")
        let hidden = try required("embedding_length")
        let headDim = try integer("attention.key_length") ?? (hidden % heads == 0 ? hidden / heads : 0)
        if let valueLength = try integer("attention.value_length"), valueLength != headDim {
            throw fail("\(architecture).attention.value_length \(valueLength) differs from key_length \(headDim)")
        }
        if let rotated = try integer("rope.dimension_count"), rotated != headDim {
            throw fail("\(architecture).rope.dimension_count is \(rotated): RoPE on part of a head of \(headDim) is not supported")
        }
        guard let epsilon = try real("attention.layer_norm_rms_epsilon") else {
            throw fail("has no metadata key \(architecture).attention.layer_norm_rms_epsilon")
        }
        let config = LlamaConfig(
            vocabSize: embedding.shape[0], hiddenSize: hidden, intermediateSize: try required("feed_forward_length"),
            numHiddenLayers: blocks, numAttentionHeads: heads,
            numKeyValueHeads: try integer("attention.head_count_kv") ?? heads, headDim: headDim,
            rmsNormEps: epsilon, maxPositionEmbeddings: try required("context_length"),
            tieWordEmbeddings: file.info("output.weight") == nil,
            bosTokenId: vocabulary.bosId, eosTokenId: vocabulary.eosId, padTokenId: vocabulary.paddingId,
            ropeTheta: try real("rope.freq_base") ?? 10000)
        do { try config.validate() } catch let error as LoRAKitError { throw fail(error.message) }
        guard embedding.shape[1] == hidden else {
            throw fail("token_embd.weight has shape \(embedding.shape), but \(architecture).embedding_length is \(hidden)")
        }
        guard vocabulary.tokens.count == config.vocabSize else {
            throw fail("has \(vocabulary.tokens.count) tokens but token_embd.weight has \(config.vocabSize) rows")
        }
        return config
    }

    /// Reads a llama.cpp model file into the Hugging Face layout (q/k rows restored) for a model of `config`;
    /// every tensor is checked for presence and shape. Quantized tensors (Q4_K …) are dequantized to F32 one at a
    /// time; with `quantization` the projections are then stored as it says (NF4), so the F32 model never exists
    /// whole. F32 tensors are borrowed from the file's memory map unless `inMemory` (see `LlamaWeights.load`).
    public static func readModel(_ file: GGUFFile, config: LlamaConfig, quantization: BaseQuantization = .none,
                                 inMemory: Bool = false) throws -> LlamaWeights {
        let arch = try file.value("general.architecture")
        guard arch == .string(architecture) else {
            throw LoRAKitError.file(file.path, "general.architecture is \(arch), expected \"\(architecture)\"")
        }
        let dims = ModelDimensions(config)
        var byHFName: [String: (gguf: String, heads: Int?)] = [
            "model.embed_tokens.weight": ("token_embd.weight", nil),
            "model.norm.weight": ("output_norm.weight", nil),
            "lm_head.weight": ("output.weight", nil),
        ]
        for l in 0..<dims.layers {
            byHFName["model.layers.\(l).input_layernorm.weight"] = ("blk.\(l).attn_norm.weight", nil)
            byHFName["model.layers.\(l).post_attention_layernorm.weight"] = ("blk.\(l).ffn_norm.weight", nil)
            for p in Projection.allCases {
                byHFName["model.layers.\(l).\(p.modulePath).weight"] = (tensorName(layer: l, projection: p), ropeHeads(p, dims))
            }
        }
        return try LlamaWeights.assemble(config: config, quantization: quantization) { hfName, shape in
            guard let (name, heads) = byHFName[hfName] else { throw LoRAKitError.file(file.path, "no GGUF name for \(hfName)") }
            guard let info = file.info(name) else { throw LoRAKitError.file(file.path, "has no tensor \(name)") }
            guard info.shape == shape else {
                throw LoRAKitError.file(file.path, "tensor \(name) has shape \(info.shape), the model needs \(shape)")
            }
            var tensor = try file.tensor(name)
            if let heads { tensor = permuteRoPERows(tensor, heads: heads, inverse: true) }
            if inMemory && !tensor.ownsMemory { tensor = tensor.clone() }
            // a tensor in memory of its own no longer needs the file's pages (a quantized file's blocks)
            if tensor.ownsMemory { file.releasePages(of: name) }
            return tensor
        }
    }
}
