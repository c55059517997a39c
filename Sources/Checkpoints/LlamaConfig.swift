import Foundation
import Tensors

/// The Hugging Face `config.json` of a LLaMA-architecture model (DESIGN §2).
///
/// Decoding applies the defaults transformers uses and validates the result, so an invalid configuration never
/// reaches the model code. Keys LoRAKit does not use are ignored; anything that would make LoRAKit compute a
/// different model than transformers (another `model_type`, RoPE scaling, biases, another activation) is an error.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// Heads of K and V; fewer than `numAttentionHeads` means grouped-query attention.
    public var numKeyValueHeads: Int
    /// Size of one head (hidden / heads unless given explicitly).
    public var headDim: Int
    public var rmsNormEps: Float
    public var maxPositionEmbeddings: Int
    /// When true there is no `lm_head.weight`: the LM head is the embedding.
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int
    public var eosTokenId: Int
    public var padTokenId: Int?
    /// RoPE base.
    public var ropeTheta: Float
    public var modelType: String

    /// Width of the query projection's output: heads · headDim.
    public var qDim: Int { numAttentionHeads * headDim }
    /// Width of the key and value projections' outputs: kvHeads · headDim.
    public var kvDim: Int { numKeyValueHeads * headDim }

    /// A configuration with transformers' defaults for everything not given (call `validate()` on user input).
    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int? = nil, headDim: Int? = nil,
                rmsNormEps: Float = 1e-6, maxPositionEmbeddings: Int = 2048, tieWordEmbeddings: Bool = false,
                bosTokenId: Int = 1, eosTokenId: Int = 2, padTokenId: Int? = nil, ropeTheta: Float = 10000,
                modelType: String = "llama") {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        self.rmsNormEps = rmsNormEps
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.padTokenId = padTokenId
        self.ropeTheta = ropeTheta
        self.modelType = modelType
    }

    /// Throws a `LoRAKitError` (without a file prefix) if the sizes cannot describe a model.
    public func validate() throws {
        let sizes: [(String, Int)] = [
            ("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
            ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
            ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim),
            ("max_position_embeddings", maxPositionEmbeddings),
        ]
        for (key, value) in sizes where value <= 0 {
            throw LoRAKitError("\(key) is \(value), expected a positive integer")
        }
        guard modelType == "llama" else {
            throw LoRAKitError("model_type is \"\(modelType)\", LoRAKit supports \"llama\" only")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw LoRAKitError("num_attention_heads \(numAttentionHeads) is not divisible by num_key_value_heads \(numKeyValueHeads)")
        }
        guard rmsNormEps > 0, rmsNormEps.isFinite else { throw LoRAKitError("rms_norm_eps is \(rmsNormEps), expected a positive number") }
        guard ropeTheta > 0, ropeTheta.isFinite else { throw LoRAKitError("rope_theta is \(ropeTheta), expected a positive number") }
        guard headDim % 2 == 0 else { throw LoRAKitError("head_dim \(headDim) is odd; RoPE rotates pairs of dimensions") }
        // The model code multiplies these sizes (projection widths, matrix bytes) before it compares them with
        // the tensors; a corrupt config must fail here, not overflow there.
        let products: [(String, [Int])] = [
            ("num_attention_heads × head_dim × hidden_size", [numAttentionHeads, headDim, hiddenSize]),
            ("num_key_value_heads × head_dim × hidden_size", [numKeyValueHeads, headDim, hiddenSize]),
            ("intermediate_size × hidden_size", [intermediateSize, hiddenSize]),
            ("vocab_size × hidden_size", [vocabSize, hiddenSize]),
        ]
        for (name, factors) in products where Self.product(factors + [MemoryLayout<Float>.size]) == nil {
            throw LoRAKitError("\(name) (\(factors.map(String.init).joined(separator: " × "))) is too large to address; the sizes are corrupt")
        }
        // RoPE's cos/sin table is precomputed for max_position_embeddings positions: head_dim floats each.
        guard let table = Self.product([maxPositionEmbeddings, headDim]), table <= Self.maximumRoPETable else {
            throw LoRAKitError("max_position_embeddings \(maxPositionEmbeddings) × head_dim \(headDim) is more than the \(Self.maximumRoPETable) RoPE table entries LoRAKit precomputes (1 GiB); lower max_position_embeddings")
        }
        for (key, id) in [("bos_token_id", bosTokenId), ("eos_token_id", eosTokenId), ("pad_token_id", padTokenId ?? 0)]
        where id < 0 || id >= vocabSize {
            throw LoRAKitError("\(key) \(id) is outside the vocabulary (vocab_size \(vocabSize))")
        }
    }

    /// The largest max_position_embeddings × head_dim accepted: 2^28 floats (1 GiB) of RoPE table, room for
    /// 2M positions at head_dim 128 (the model grows the table on demand for longer inputs).
    public static let maximumRoPETable = 1 << 28

    /// The product of `factors`, nil when it overflows Int.
    private static func product(_ factors: [Int]) -> Int? {
        var result = 1
        for factor in factors {
            let (value, overflow) = result.multipliedReportingOverflow(by: factor)
            if overflow { return nil }
            result = value
        }
        return result
    }

    // MARK: files

    /// Reads and validates a `config.json`; every error starts with `path`.
    public static func load(from path: String) throws -> LlamaConfig {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw LoRAKitError.file(path, "cannot read: \(AtomicFile.describe(error))")
        }
        return try decode(data, source: path)
    }

    /// Decodes and validates config JSON; `source` names it in errors.
    public static func decode(_ data: Data, source: String) throws -> LlamaConfig {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw LoRAKitError.file(source, "is not valid JSON")
        }
        guard object is [String: Any] else { throw LoRAKitError.file(source, "is not a JSON object") }
        do {
            return try JSONDecoder().decode(LlamaConfig.self, from: data)
        } catch let error as LoRAKitError {
            throw LoRAKitError.file(source, error.message)
        } catch let error as DecodingError {
            throw LoRAKitError.file(source, Self.describe(error))
        }
    }

    /// Writes the config as transformers' `LlamaConfig` expects it (atomically, sorted keys).
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(UInt8(ascii: "\n"))
        try AtomicFile.write(data, to: path)
    }

    // MARK: Codable

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case maxPositionEmbeddings = "max_position_embeddings", tieWordEmbeddings = "tie_word_embeddings"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
        case ropeTheta = "rope_theta", modelType = "model_type"
        case ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
        case architectures, torchDtype = "torch_dtype", hiddenAct = "hidden_act"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias"
    }

    /// `rope_scaling` (older files) or `rope_parameters` (newer files); "type" is the oldest spelling.
    private struct RopeFields: Decodable {
        var ropeType: String?
        var type: String?
        var ropeTheta: Float?
        enum CodingKeys: String, CodingKey { case ropeType = "rope_type", type, ropeTheta = "rope_theta" }
        var kind: String { ropeType ?? type ?? "default" }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func required(_ key: CodingKeys) throws -> Int {
            guard c.contains(key), !(try c.decodeNil(forKey: key)) else {
                throw LoRAKitError("missing required key \(key.stringValue)")
            }
            return try c.decode(Int.self, forKey: key)
        }
        /// An int, or a list of ints of which the first counts (transformers allows several EOS ids).
        func tokenId(_ key: CodingKeys) throws -> Int? {
            guard c.contains(key), !(try c.decodeNil(forKey: key)) else { return nil }
            if let id = try? c.decode(Int.self, forKey: key) { return id }
            let ids = try c.decode([Int].self, forKey: key)
            guard let first = ids.first else { throw LoRAKitError("\(key.stringValue) is an empty list") }
            return first
        }

        let modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        guard modelType == "llama" else {
            throw LoRAKitError("model_type is \"\(modelType)\", LoRAKit supports \"llama\" only")
        }
        if let scaling = try c.decodeIfPresent(RopeFields.self, forKey: .ropeScaling), scaling.kind != "default" {
            throw LoRAKitError("unsupported rope scaling \(scaling.kind) (LoRAKit implements plain RoPE)")
        }
        let parameters = try c.decodeIfPresent(RopeFields.self, forKey: .ropeParameters)
        if let parameters, parameters.kind != "default" {
            throw LoRAKitError("unsupported rope scaling \(parameters.kind) (LoRAKit implements plain RoPE)")
        }
        if let activation = try c.decodeIfPresent(String.self, forKey: .hiddenAct), activation != "silu" {
            throw LoRAKitError("hidden_act is \"\(activation)\", LoRAKit implements SwiGLU with silu only")
        }
        for key in [CodingKeys.attentionBias, .mlpBias] where try c.decodeIfPresent(Bool.self, forKey: key) == true {
            throw LoRAKitError("\(key.stringValue) is true, LoRAKit's LLaMA has no biases")
        }

        let hiddenSize = try required(.hiddenSize)
        let heads = try required(.numAttentionHeads)
        let vocabSize = try required(.vocabSize)
        let intermediateSize = try required(.intermediateSize)
        let layers = try required(.numHiddenLayers)
        let headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        if headDim == nil, heads > 0, hiddenSize % heads != 0 {
            throw LoRAKitError("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(heads) (and no head_dim is given)")
        }
        self.init(vocabSize: vocabSize, hiddenSize: hiddenSize, intermediateSize: intermediateSize,
                  numHiddenLayers: layers, numAttentionHeads: heads,
                  numKeyValueHeads: try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads),
                  headDim: headDim,
                  rmsNormEps: try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6,
                  maxPositionEmbeddings: try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048,
                  tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false,
                  bosTokenId: try tokenId(.bosTokenId) ?? 1,
                  eosTokenId: try tokenId(.eosTokenId) ?? 2,
                  padTokenId: try tokenId(.padTokenId),
                  ropeTheta: try parameters?.ropeTheta ?? c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000,
                  modelType: modelType)
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(["LlamaForCausalLM"], forKey: .architectures)
        try c.encode("llama", forKey: .modelType)
        try c.encode("float32", forKey: .torchDtype)
        try c.encode("silu", forKey: .hiddenAct)
        try c.encode(false, forKey: .attentionBias)
        try c.encode(false, forKey: .mlpBias)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(bosTokenId, forKey: .bosTokenId)
        try c.encode(eosTokenId, forKey: .eosTokenId)
        if let padTokenId { try c.encode(padTokenId, forKey: .padTokenId) }
        try c.encode(ropeTheta, forKey: .ropeTheta)
    }

    /// One line for a DecodingError: which key, what was expected.
    private static func describe(_ error: DecodingError) -> String {
        func keyPath(_ path: [CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "key \(keyPath(context.codingPath)) has the wrong type (expected \(type))"
        case .valueNotFound(let type, let context):
            return "key \(keyPath(context.codingPath)) is null (expected \(type))"
        case .keyNotFound(let key, let context):
            return "missing key \(keyPath(context.codingPath + [key]))"
        case .dataCorrupted(let context):
            return "key \(keyPath(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
