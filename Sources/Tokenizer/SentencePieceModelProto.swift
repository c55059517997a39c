import Foundation

/// A SentencePiece model written from its vocabulary: the `ModelProto` of sentencepiece_model.proto, for a
/// tokenizer that comes as a list of pieces rather than a `tokenizer.model` file (a llama.cpp GGUF file carries
/// its tokenizer as `tokenizer.ggml.tokens`, `scores` and `token_type`).
///
/// Only what encoding and decoding read is written: the pieces with their scores and types, the trainer's model
/// type, byte fallback and special pieces, and an identity normalizer (no character map: LLaMA's tokenizers
/// normalize nothing) that escapes spaces as "▁", keeps repeated spaces and optionally prefixes one.
public struct SentencePieceModelProto: Equatable, Sendable {
    public struct Piece: Equatable, Sendable {
        public var text: String
        public var score: Float
        public var type: PieceType

        public init(_ text: String, score: Float, type: PieceType) {
            self.text = text
            self.score = score
            self.type = type
        }
    }

    public var pieces: [Piece]
    public var modelType: SentencePieceTokenizer.ModelType
    /// Characters the vocabulary cannot spell are written as their UTF-8 bytes (`<0xE2>` pieces).
    public var byteFallback: Bool
    /// `add_dummy_prefix`: a "▁" is put before the text, as LLaMA's tokenizer does.
    public var addDummyPrefix: Bool
    /// The special ids (-1: none); their pieces become the trainer's `unk_piece`, `bos_piece` … so that the
    /// loaded model reports these ids.
    public var unknownId: Int32, bosId: Int32, eosId: Int32, padId: Int32

    public init(pieces: [Piece], modelType: SentencePieceTokenizer.ModelType = .bpe, byteFallback: Bool,
                addDummyPrefix: Bool = true, unknownId: Int32, bosId: Int32, eosId: Int32, padId: Int32 = -1) {
        self.pieces = pieces
        self.modelType = modelType
        self.byteFallback = byteFallback
        self.addDummyPrefix = addDummyPrefix
        self.unknownId = unknownId
        self.bosId = bosId
        self.eosId = eosId
        self.padId = padId
    }

    /// The model's bytes, as `tokenizer.model` holds them.
    public func serialized() -> Data {
        var model = ProtoWriter()
        for piece in pieces {
            var entry = ProtoWriter()
            entry.string(1, piece.text)
            entry.float(2, piece.score)
            entry.varint(3, UInt64(piece.type.protoNumber))
            model.message(1, entry)
        }
        var trainer = ProtoWriter()
        trainer.varint(3, modelType == .bpe ? 2 : 1)
        trainer.varint(4, UInt64(pieces.count))
        trainer.varint(35, byteFallback ? 1 : 0)
        // ids are int32: a negative one is written as its 64-bit two's complement, as protobuf does
        trainer.varint(40, UInt64(bitPattern: Int64(unknownId)))
        trainer.varint(41, UInt64(bitPattern: Int64(bosId)))
        trainer.varint(42, UInt64(bitPattern: Int64(eosId)))
        trainer.varint(43, UInt64(bitPattern: Int64(padId)))
        for (field, id) in [(45, unknownId), (46, bosId), (47, eosId), (48, padId)]
        where id >= 0 && Int(id) < pieces.count {
            trainer.string(field, pieces[Int(id)].text)
        }
        model.message(2, trainer)
        var normalizer = ProtoWriter()
        normalizer.string(1, "identity")
        normalizer.varint(3, addDummyPrefix ? 1 : 0)
        normalizer.varint(4, 0)   // remove_extra_whitespaces: off, as in LLaMA's tokenizer
        normalizer.varint(5, 1)   // escape_whitespaces: spaces become "▁"
        model.message(3, normalizer)
        return model.bytes
    }
}

extension PieceType {
    /// The number of the type in sentencepiece_model.proto.
    var protoNumber: Int {
        switch self {
        case .normal: return 1
        case .unknown: return 2
        case .control: return 3
        case .userDefined: return 4
        case .unused: return 5
        case .byte: return 6
        }
    }
}

/// Protobuf's wire format, the few field kinds a ModelProto needs.
private struct ProtoWriter {
    var bytes = Data()

    private mutating func raw(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    private mutating func key(_ field: Int, wireType: UInt64) { raw(UInt64(field) << 3 | wireType) }

    mutating func varint(_ field: Int, _ value: UInt64) {
        key(field, wireType: 0)
        raw(value)
    }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, wireType: 5)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ field: Int, _ value: String) {
        key(field, wireType: 2)
        let utf8 = Array(value.utf8)
        raw(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func message(_ field: Int, _ inner: ProtoWriter) {
        key(field, wireType: 2)
        raw(UInt64(inner.bytes.count))
        bytes.append(inner.bytes)
    }
}
