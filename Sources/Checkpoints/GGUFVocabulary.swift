import Foundation
import Tensors

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
    /// The model's Jinja chat template (`tokenizer.chat_template`, from `tokenizer_config.json` in a Hugging Face
    /// directory), written when present so that llama.cpp's chat modes find it.
    public var chatTemplate: String?

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
        if let chatTemplate { out.append(("tokenizer.chat_template", .string(chatTemplate))) }
        return out
    }
}

extension GGUFVocabulary {
    /// The tokenizer of a llama.cpp model file, read from its `tokenizer.ggml.*` metadata.
    ///
    /// Only SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`: LLaMA 1 and 2, Mistral, TinyLlama …) are
    /// read; byte-level BPE (`gpt2`: LLaMA 3, Qwen) and the others are refused by name. Scores and types may be
    /// absent (0 and normal, as llama.cpp assumes); every id is checked against the vocabulary.
    public init(file: GGUFFile) throws {
        func fail(_ message: String) -> LoRAKitError { LoRAKitError.file(file.path, message) }
        guard let model = file.metadata["tokenizer.ggml.model"] else {
            throw fail("has no tokenizer (no tokenizer.ggml.model metadata)")
        }
        guard model.text == "llama" else {
            throw fail("its tokenizer is \(model) (tokenizer.ggml.model); LoRAKit reads SentencePiece vocabularies, "
                + "\"llama\", only (byte-level BPE as in LLaMA 3 or Qwen is not supported)")
        }
        guard let tokenValues = file.metadata["tokenizer.ggml.tokens"]?.elements, !tokenValues.isEmpty else {
            throw fail("tokenizer.ggml.tokens is missing or not a list of strings")
        }
        let tokens = try tokenValues.enumerated().map { index, value in
            guard let text = value.text else { throw fail("tokenizer.ggml.tokens[\(index)] is \(value), not a string") }
            return text
        }
        let count = tokens.count
        func list<T>(_ key: String, default fallback: T, _ convert: (GGUFValue) -> T?) throws -> [T] {
            guard let value = file.metadata[key] else { return Array(repeating: fallback, count: count) }
            guard let elements = value.elements, elements.count == count else {
                throw fail("\(key) is \(value); expected a list of \(count) values, one per token")
            }
            return try elements.enumerated().map { index, element in
                guard let converted = convert(element) else { throw fail("\(key)[\(index)] is \(element)") }
                return converted
            }
        }
        let scores = try list("tokenizer.ggml.scores", default: Float(0)) { $0.real.map(Float.init) }
        let types = try list("tokenizer.ggml.token_type", default: TokenType.normal) {
            $0.integer.flatMap { Int32(exactly: $0) }.flatMap(TokenType.init(rawValue:))
        }
        func id(_ key: String) throws -> Int? {
            guard let value = file.metadata[key] else { return nil }
            guard let id = value.integer, (0..<count).contains(id) else {
                throw fail("\(key) is \(value), outside the vocabulary of \(count) tokens")
            }
            return id
        }
        func flag(_ key: String, default fallback: Bool) throws -> Bool {
            guard let value = file.metadata[key] else { return fallback }
            guard case .bool(let flag) = value else { throw fail("\(key) is \(value), expected a bool") }
            return flag
        }
        // llama.cpp's defaults for a SentencePiece vocabulary: <s> = 1, </s> = 2, <unk> = 0
        let bos = try id("tokenizer.ggml.bos_token_id") ?? 1, eos = try id("tokenizer.ggml.eos_token_id") ?? 2
        guard bos < count, eos < count else { throw fail("has \(count) tokens, too few for the BOS and EOS ids \(bos) and \(eos)") }
        let unknown = try id("tokenizer.ggml.unknown_token_id") ?? types.firstIndex(of: .unknown)
        self.init(tokens: tokens, scores: scores, types: types, bosId: bos, eosId: eos, unknownId: unknown,
                  paddingId: try id("tokenizer.ggml.padding_token_id"),
                  addBos: try flag("tokenizer.ggml.add_bos_token", default: true),
                  addSpacePrefix: try flag("tokenizer.ggml.add_space_prefix", default: true))
        chatTemplate = file.metadata["tokenizer.chat_template"]?.text
    }
}
