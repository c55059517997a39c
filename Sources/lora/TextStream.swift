import Foundation
import Tokenizer

/// Generated text written to a terminal as it grows, as llama.cpp and mlx-lm show it (`StreamingDecoder` turns
/// the ids into text a few pieces at a time).
struct TextStream {
    /// Ids that end the text and are not shown (end of sequence).
    let stop: Int32
    private var decoder: StreamingDecoder
    private var shown = ""

    init(tokenizer: SentencePieceTokenizer, stop: Int32) {
        decoder = StreamingDecoder(tokenizer: tokenizer)
        self.stop = stop
    }

    mutating func append(_ id: Int32) {
        guard id != stop, let text = try? decoder.append(id), !text.isEmpty else { return }
        write(text)
        shown += text
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
