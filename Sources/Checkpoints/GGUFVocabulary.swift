import Foundation

/// The tokenizer of a llama.cpp model: the `tokenizer.ggml.*` metadata that lets llama.cpp tokenize text.
///
/// For a SentencePiece model (`tokenizer.ggml.model = "llama"`) llama.cpp needs every piece's text, score and
/// type, the special ids, and whether it prepends BOS and a space ("▁") as SentencePiece does.
public struct GGUFVocabulary: Equatable, Sendable {
    /// llama.cpp's token types (gguf-py's `TokenType`).
    public enum TokenType: Int32, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public var tokens: [String]
    public var scores: [Float]
    public var types: [TokenType]
    public var bosId: Int
    public var eosId: Int
    public var unknownId: Int?
    public var paddingId: Int?
    /// Whether llama.cpp adds BOS when it tokenizes a prompt (LLaMA: true).
    public var addBos: Bool
    /// SentencePiece's `add_dummy_prefix`: a "▁" is put before the text.
    public var addSpacePrefix: Bool

    public init(tokens: [String], scores: [Float], types: [TokenType], bosId: Int, eosId: Int, unknownId: Int?,
                paddingId: Int?, addBos: Bool = true, addSpacePrefix: Bool = true) {
        self.tokens = tokens
        self.scores = scores
        self.types = types
        self.bosId = bosId
        self.eosId = eosId
        self.unknownId = unknownId
        self.paddingId = paddingId
        self.addBos = addBos
        self.addSpacePrefix = addSpacePrefix
    }

    /// The metadata entries, with the keys and value types of llama.cpp's converter.
    public var metadata: [(key: String, value: GGUFValue)] {
        var out: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.pre", .string("default")),
            ("tokenizer.ggml.tokens", .strings(tokens)),
            ("tokenizer.ggml.scores", .float32s(scores)),
            ("tokenizer.ggml.token_type", .int32s(types.map(\.rawValue))),
            ("tokenizer.ggml.bos_token_id", .uint32(UInt32(bosId))),
            ("tokenizer.ggml.eos_token_id", .uint32(UInt32(eosId))),
        ]
        if let unknownId { out.append(("tokenizer.ggml.unknown_token_id", .uint32(UInt32(unknownId)))) }
        if let paddingId { out.append(("tokenizer.ggml.padding_token_id", .uint32(UInt32(paddingId)))) }
        out += [
            ("tokenizer.ggml.add_bos_token", .bool(addBos)),
            ("tokenizer.ggml.add_eos_token", .bool(false)),
            ("tokenizer.ggml.add_space_prefix", .bool(addSpacePrefix)),
        ]
        return out
    }
}
