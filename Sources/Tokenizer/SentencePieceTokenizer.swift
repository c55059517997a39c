import CSentencePiece
import Foundation

/// What kind of vocabulary entry a piece is (SentencePiece's `ModelProto.SentencePiece.Type`).
public enum PieceType: String, Sendable, CaseIterable {
    /// An ordinary subword learned from the text.
    case normal
    /// The `<unk>` piece, for text the vocabulary cannot spell (never produced with byte fallback).
    case unknown
    /// A control symbol such as `<s>` or `</s>`: never produced by encoding text, decodes to nothing.
    case control
    /// A symbol given to the trainer that encoding always keeps whole.
    case userDefined
    /// A piece kept in the vocabulary but never produced.
    case unused
    /// One raw byte, `<0x41>`, used by byte fallback for characters the vocabulary lacks.
    case byte
}

/// A SentencePiece model (`tokenizer.model`): text to piece ids and back.
///
/// Encoding adds no BOS or EOS: callers build `[bosId] + encode(prompt) + encode(output) + [eosId]` themselves
/// (DESIGN §4). Encoding and decoding are thread-safe; the model is immutable once loaded.
public final class SentencePieceTokenizer: @unchecked Sendable {
    /// The file the model was loaded from.
    public let modelPath: String
    /// The number of pieces; valid ids are `0..<vocabSize`.
    public let vocabSize: Int
    /// The begin-of-sequence id, or -1 when the model has none.
    public let bosId: Int32
    /// The end-of-sequence id, or -1 when the model has none.
    public let eosId: Int32
    /// The padding id, or -1 when the model has none (LLaMA's tokenizers have none).
    public let padId: Int32
    /// The unknown-piece id, or -1 when the model has none.
    public let unkId: Int32
    /// The algorithm the model was trained with, or nil for SentencePiece's word and char models.
    public let modelType: ModelType?

    private let processor: OpaquePointer

    /// Larger files are refused before being read.
    static let maximumModelBytes = 1 << 30

    /// Loads the SentencePiece model at `modelPath`.
    ///
    /// Throws when the file is missing ("PATH: no such tokenizer model") or is not a well-formed model
    /// ("PATH: not a SentencePiece model (…)"); a corrupt file never crashes the process.
    public convenience init(modelPath: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: modelPath, isDirectory: &isDirectory) else {
            throw TokenizerError.file(modelPath, "no such tokenizer model")
        }
        if isDirectory.boolValue {
            throw TokenizerError.file(modelPath, "not a SentencePiece model (it is a directory)")
        }
        guard FileManager.default.isReadableFile(atPath: modelPath) else {
            throw TokenizerError.file(modelPath, "cannot read the tokenizer model (permission denied)")
        }
        // The whole file is read into memory; real models are a few MB (protobuf caps them at 2 GB).
        let size = (try? FileManager.default.attributesOfItem(atPath: modelPath)[.size] as? Int) ?? 0
        if size > Self.maximumModelBytes {
            throw TokenizerError.file(modelPath, "not a SentencePiece model (\(size) bytes is far too large for one)")
        }
        var error: UnsafeMutablePointer<CChar>?
        guard let processor = csp_load(modelPath, &error) else {
            throw TokenizerError.file(modelPath, "not a SentencePiece model (\(Self.takeMessage(error)))")
        }
        self.init(processor: processor, source: modelPath)
    }

    /// Loads a model from its bytes (a `SentencePieceModelProto`, say); `source` names where they came from in
    /// messages and is the tokenizer's `modelPath`.
    public convenience init(serializedModel: Data, source: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        let processor = serializedModel.withUnsafeBytes { csp_load_serialized($0.baseAddress, $0.count, &error) }
        guard let processor else {
            throw TokenizerError.file(source, "not a SentencePiece model (\(Self.takeMessage(error)))")
        }
        self.init(processor: processor, source: source)
    }

    private init(processor: OpaquePointer, source: String) {
        self.processor = processor
        self.modelPath = source
        vocabSize = Int(csp_piece_count(processor))
        bosId = csp_bos_id(processor)
        eosId = csp_eos_id(processor)
        padId = csp_pad_id(processor)
        unkId = csp_unk_id(processor)
        switch csp_model_type(processor) {
        case 1: modelType = .unigram
        case 2: modelType = .bpe
        default: modelType = nil
        }
    }

    deinit { csp_free(processor) }

    /// The piece ids of `text`, without BOS or EOS.
    ///
    /// A model trained by SentencePiece encodes any text (a Swift `String` is valid UTF-8, and with byte fallback
    /// every character has a spelling; without it, unknown characters become `unkId`). A model written from
    /// another tool's vocabulary (a GGUF file's) can hold pieces libsentencepiece cannot segment around — a
    /// control piece of one character that the text contains — and then this throws, naming the model and the text.
    public func encode(_ text: String) throws -> [Int32] {
        var text = text
        return try text.withUTF8 { bytes -> [Int32] in
            var ids: UnsafeMutablePointer<Int32>?
            var count = 0
            var error: UnsafeMutablePointer<CChar>?
            let start = bytes.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }
            guard csp_encode(processor, start, bytes.count, &ids, &count, &error) == 0 else {
                let shown = String(decoding: bytes.prefix(40), as: UTF8.self)
                throw TokenizerError.file(modelPath, "cannot encode the text \"\(shown)\(bytes.count > 40 ? "…" : "")\" "
                    + "(libsentencepiece: \(Self.takeMessage(error)))")
            }
            defer { csp_free_ids(ids) }
            guard let ids else { return [] }
            return Array(UnsafeBufferPointer(start: ids, count: count))
        }
    }

    /// The text of `ids`. Control pieces (`<s>`, `</s>`) decode to nothing, `<unk>` to " ⁇ ", byte pieces to
    /// their bytes (an incomplete UTF-8 sequence becomes U+FFFD).
    ///
    /// Throws when an id is outside `0..<vocabSize`, naming the id and the vocabulary size.
    public func decode(_ ids: [Int32]) throws -> String {
        if let position = ids.firstIndex(where: { $0 < 0 || Int($0) >= vocabSize }) {
            throw TokenizerError.file(modelPath, "cannot decode id \(ids[position]) at position \(position): "
                + "the vocabulary has \(vocabSize) pieces, ids 0...\(vocabSize - 1)")
        }
        var length = 0
        var error: UnsafeMutablePointer<CChar>?
        let text = ids.withUnsafeBufferPointer { csp_decode(processor, $0.baseAddress, $0.count, &length, &error) }
        guard let text else {
            throw TokenizerError.file(modelPath, "cannot decode \(ids.count) ids (\(Self.takeMessage(error)))")
        }
        defer { csp_free_string(text) }
        // Decoded text may hold NUL bytes (the piece <0x00>), so the length is taken, not strlen.
        return String(decoding: UnsafeRawBufferPointer(start: text, count: length), as: UTF8.self)
    }

    /// The piece of `id`, such as "▁the", "<s>" or "<0x41>".
    public func piece(_ id: Int32) throws -> String {
        try checkId(id)
        var length = 0
        guard let piece = csp_id_to_piece(processor, id, &length) else { throw outOfRange(id) }
        return String(decoding: UnsafeRawBufferPointer(start: piece, count: length), as: UTF8.self)
    }

    /// The id of `piece`, or nil when the vocabulary has no such piece.
    public func pieceId(_ piece: String) -> Int32? {
        var piece = piece
        let id = piece.withUTF8 { bytes in
            csp_piece_to_id(processor, bytes.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) },
                            bytes.count)
        }
        // PieceToId answers the unknown id for a missing piece; tell that apart from "<unk>" itself.
        if id == unkId, (try? self.piece(id)) != piece { return nil }
        return id >= 0 ? id : nil
    }

    /// The score of `id`: a log probability in unigram models, minus the merge rank in bpe models.
    public func score(_ id: Int32) throws -> Float {
        try checkId(id)
        return csp_score(processor, id)
    }

    /// What kind of piece `id` is.
    public func pieceType(_ id: Int32) throws -> PieceType {
        try checkId(id)
        switch csp_type(processor, id).rawValue {
        case CSP_PIECE_UNKNOWN.rawValue: return .unknown
        case CSP_PIECE_CONTROL.rawValue: return .control
        case CSP_PIECE_USER_DEFINED.rawValue: return .userDefined
        case CSP_PIECE_UNUSED.rawValue: return .unused
        case CSP_PIECE_BYTE.rawValue: return .byte
        case CSP_PIECE_NORMAL.rawValue: return .normal
        default: throw outOfRange(id)
        }
    }

    private func checkId(_ id: Int32) throws {
        if id < 0 || Int(id) >= vocabSize { throw outOfRange(id) }
    }

    private func outOfRange(_ id: Int32) -> TokenizerError {
        TokenizerError.file(modelPath, "id \(id) is outside the vocabulary of \(vocabSize) pieces (ids 0...\(vocabSize - 1))")
    }

    /// The text of a C error message, which is released.
    static func takeMessage(_ error: UnsafeMutablePointer<CChar>?) -> String {
        guard let error else { return "unknown error" }
        defer { csp_free_string(error) }
        return String(cString: error)
    }
}
