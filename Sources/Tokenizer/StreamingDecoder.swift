/// Text of ids that arrive one at a time, as generation streams it (llama.cpp's and transformers' streamers).
///
/// SentencePiece decodes sequences, not pieces: the leading "▁" of a sequence's first piece is dropped, and a
/// character split over byte-fallback pieces decodes only once all its bytes are there. So each new id decodes
/// the ids from `prefixOffset` on twice, without and with the ids not yet returned, and returns the difference:
/// both decodings start at the same piece and drop the same "▁". Once text is returned the window moves up, so an
/// id costs a few pieces of decoding, not the whole text. A trailing U+FFFD (a character still missing bytes)
/// waits for the next id. The returned pieces add up to `decode` of all the ids, up to such a waiting character.
public struct StreamingDecoder {
    public let tokenizer: SentencePieceTokenizer
    public private(set) var ids: [Int32] = []
    /// Decoding starts here; `readOffset` is where the ids whose text was returned end.
    public private(set) var prefixOffset = 0
    private var readOffset = 0

    public init(tokenizer: SentencePieceTokenizer) {
        self.tokenizer = tokenizer
    }

    /// Adds `id` and returns the text it completes ("" while a character waits for its bytes or the ids decode to
    /// nothing new).
    public mutating func append(_ id: Int32) throws -> String {
        ids.append(id)
        let before = try tokenizer.decode(Array(ids[prefixOffset..<readOffset]))
        let text = try tokenizer.decode(Array(ids[prefixOffset...]))
        guard !text.hasSuffix("\u{FFFD}"), text.count > before.count, text.hasPrefix(before) else { return "" }
        prefixOffset = readOffset
        readOffset = ids.count
        return String(text.dropFirst(before.count))
    }
}
