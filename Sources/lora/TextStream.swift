import Foundation
import Tokenizer

/// Generated text written to a terminal as it grows, as llama.cpp and mlx-lm show it.
///
/// SentencePiece decodes whole sequences (a piece's leading "▁" becomes a space only after the first word, and a
/// character split over byte-fallback pieces decodes only once all its bytes are there), so each new token
/// decodes every id so far and the part past what is already shown is written; a trailing U+FFFD (a character
/// still missing bytes) waits for the next token.
struct TextStream {
    let tokenizer: SentencePieceTokenizer
    /// Ids that end the text and are not shown (end of sequence).
    let stop: Int32
    private var ids: [Int32] = []
    private var shown = ""

    init(tokenizer: SentencePieceTokenizer, stop: Int32) {
        self.tokenizer = tokenizer
        self.stop = stop
    }

    mutating func append(_ id: Int32) {
        guard id != stop else { return }
        ids.append(id)
        guard var text = try? tokenizer.decode(ids) else { return }
        while text.hasSuffix("\u{FFFD}") { text.removeLast() }
        guard text.count > shown.count, text.hasPrefix(shown) else { return }
        write(String(text.dropFirst(shown.count)))
        shown = text
    }

    /// Writes what is left of `final` (the whole decoded answer) and ends the line.
    mutating func finish(_ final: String) {
        write((final.hasPrefix(shown) ? String(final.dropFirst(shown.count)) : "") + "\n")
        shown = final
    }

    private func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
