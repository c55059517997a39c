import Checkpoints
import Foundation
import Tensors
import Tokenizer

extension GGUFVocabulary {
    /// The vocabulary of a SentencePiece model for a model of `config` (its BOS/EOS ids win, as in the
    /// converter, which reads them from config.json), padded to `vocab_size` when the embedding has more rows.
    ///
    /// Pieces, scores and types come from the model itself, as llama.cpp's converter takes them from Python
    /// SentencePiece; user-defined pieces keep their type, so llama.cpp keeps them whole as SentencePiece does.
    public init(tokenizer: SentencePieceTokenizer, config: LlamaConfig) throws {
        var tokens: [String] = [], scores: [Float] = [], types: [TokenType] = []
        tokens.reserveCapacity(tokenizer.vocabSize)
        do {
            for id in 0..<Int32(tokenizer.vocabSize) {
                tokens.append(try tokenizer.piece(id))
                scores.append(try tokenizer.score(id))
                switch try tokenizer.pieceType(id) {
                case .normal: types.append(.normal)
                case .unknown: types.append(.unknown)
                case .control: types.append(.control)
                case .userDefined: types.append(.userDefined)
                case .unused: types.append(.unused)
                case .byte: types.append(.byte)
                }
            }
        } catch {
            throw LoRAKitError("\(tokenizer.modelPath): cannot read the vocabulary: \(error)")
        }
        guard tokens.count <= config.vocabSize else {
            throw LoRAKitError("\(tokenizer.modelPath) has \(tokens.count) pieces, more than config.json's vocab_size \(config.vocabSize): the tokenizer does not belong to this model")
        }
        // Embedding rows beyond the tokenizer (vocabularies padded to a round size) get placeholder pieces, as
        // llama.cpp's converter writes them: "[PADi]", score -10000, unused.
        for id in tokens.count..<config.vocabSize {
            tokens.append("[PAD\(id)]")
            scores.append(-10000)
            types.append(.unused)
        }
        let padding = tokenizer.padId >= 0 ? Int(tokenizer.padId) : config.padTokenId
        self.init(tokens: tokens, scores: scores, types: types, bosId: config.bosTokenId, eosId: config.eosTokenId,
                  unknownId: tokenizer.unkId >= 0 ? Int(tokenizer.unkId) : nil, paddingId: padding,
                  addBos: true, addSpacePrefix: Self.addsDummyPrefix(tokenizer))
    }

    /// Whether SentencePiece puts "▁" before the text (`add_dummy_prefix`), found by encoding "a": the model
    /// does not expose its normalizer settings, but its output shows them. Byte pieces are decoded, so a
    /// vocabulary without "▁" (spelled <0xE2><0x96><0x81>) is read right too.
    public static func addsDummyPrefix(_ tokenizer: SentencePieceTokenizer) -> Bool {
        var bytes: [UInt8] = []
        for id in (try? tokenizer.encode("a")) ?? [] {
            guard let piece = try? tokenizer.piece(id) else { return true }
            if (try? tokenizer.pieceType(id)) == .byte, piece.count == 6, let byte = UInt8(piece.dropFirst(3).prefix(2), radix: 16) {
                bytes.append(byte)
            } else {
                bytes += Array(piece.utf8)
            }
        }
        return bytes.starts(with: Array("\u{2581}".utf8))
    }

    /// The SentencePiece model llama.cpp tokenizes this vocabulary with: BPE over the pieces by score (llama.cpp's
    /// `llama` tokenizer merges by score whatever algorithm trained the vocabulary), byte fallback when the
    /// vocabulary has byte pieces, and the space prefix of `tokenizer.ggml.add_space_prefix`.
    public var sentencePieceModel: SentencePieceModelProto {
        let pieces = zip(zip(tokens, scores), types).map { entry, type in
            SentencePieceModelProto.Piece(entry.0, score: entry.1, type: type.pieceType)
        }
        return SentencePieceModelProto(pieces: pieces, modelType: .bpe, byteFallback: types.contains(.byte),
                                       addDummyPrefix: addSpacePrefix, unknownId: Int32(unknownId ?? -1),
                                       bosId: Int32(bosId), eosId: Int32(eosId), padId: Int32(distinctPadding ?? -1))
    }

    /// The padding id when it is a token of its own (files often name `<unk>` or `</s>` as padding, which a
    /// SentencePiece model cannot also call its pad piece).
    private var distinctPadding: Int? {
        guard let paddingId, paddingId != bosId, paddingId != eosId, paddingId != unknownId else { return nil }
        return paddingId
    }
}

extension GGUFVocabulary.TokenType {
    /// The SentencePiece piece type of a llama.cpp token type (the two number them alike).
    var pieceType: PieceType {
        switch self {
        case .normal: return .normal
        case .unknown: return .unknown
        case .control: return .control
        case .userDefined: return .userDefined
        case .unused: return .unused
        case .byte: return .byte
        }
    }
}
