import Foundation
import MiniGPT
import Tensors
import Tokenizer

/// A text corpus as one token stream: each paragraph (text between blank lines) becomes [BOS] + ids + [EOS].
///
/// Training windows start at seeded random offsets of the training part; validation windows tile the held-out
/// tail of the stream.
public struct TokenCorpus {
    public let tokens: [Int32]
    public let trainEnd: Int
    public let paragraphs: Int

    /// Reads and encodes `path`; the last `valFraction` of the stream is held out.
    public init(path: String, tokenizer: SentencePieceTokenizer, bos: Int32, eos: Int32, valFraction: Double) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoRAKitError.file(path, "cannot read the corpus (missing or unreadable)")
        }
        guard let text = String(validatingUTF8Data: data) else {
            let offset = utf8ErrorOffset(data)
            throw LoRAKitError.file(path, "not UTF-8 text (invalid byte at offset \(offset))")
        }
        var stream: [Int32] = []
        var count = 0
        for paragraph in text.components(separatedBy: "\n\n") {
            let trimmed = paragraph.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
            stream.append(bos)
            stream += try tokenizer.encode(trimmed)
            stream.append(eos)
            count += 1
        }
        guard count > 0 else { throw LoRAKitError.file(path, "the corpus is empty") }
        tokens = stream
        paragraphs = count
        trainEnd = valFraction > 0 ? Int(Double(stream.count) * (1 - valFraction)) : stream.count
    }

    /// `batch` windows of `seqLen` tokens from the training part, each predicting its next tokens.
    public func trainingBatch(batch: Int, seqLen: Int, rng: inout RandomGenerator) -> TokenBatch {
        let span = max(1, trainEnd - seqLen - 1)
        var ids = [Int32](repeating: 0, count: batch * seqLen), targets = ids
        for b in 0..<batch {
            let start = Int(rng.next() % UInt64(span))
            for t in 0..<seqLen {
                ids[b * seqLen + t] = tokens[min(start + t, tokens.count - 1)]
                targets[b * seqLen + t] = start + t + 1 < tokens.count ? tokens[start + t + 1] : -1
            }
        }
        return TokenBatch(batch: batch, seqLen: seqLen, ids: ids, lengths: Array(repeating: Int32(seqLen), count: batch),
                          targets: targets)
    }

    /// The held-out tail cut into consecutive windows (at most `maxWindows`).
    public func validationBatches(batch: Int, seqLen: Int, maxWindows: Int = 64) -> [TokenBatch] {
        var windows: [[Int32]] = []
        var start = trainEnd
        while start + seqLen + 1 <= tokens.count && windows.count < maxWindows {
            windows.append(Array(tokens[start..<(start + seqLen + 1)]))
            start += seqLen
        }
        return stride(from: 0, to: windows.count, by: batch).map { first in
            let group = windows[first..<min(windows.count, first + batch)]
            var ids: [Int32] = [], targets: [Int32] = []
            for w in group { ids += w.dropLast(); targets += w.dropFirst() }
            return TokenBatch(batch: group.count, seqLen: seqLen, ids: ids,
                              lengths: Array(repeating: Int32(seqLen), count: group.count), targets: targets)
        }
    }
}

extension String {
    /// Strict UTF-8 decoding: nil when the bytes are not valid UTF-8 (Foundation would repair them silently).
    init?(validatingUTF8Data data: Data) {
        guard utf8ErrorOffset(data) < 0 else { return nil }
        self = String(decoding: data, as: UTF8.self)
    }
}

/// The offset of the first byte that is not valid UTF-8, or −1.
func utf8ErrorOffset(_ data: Data) -> Int {
    var iterator = data.makeIterator()
    var decoder = UTF8()
    var offset = 0
    var scalarStart = 0
    while true {
        switch decoder.decode(&iterator) {
        case .scalarValue(let scalar):
            scalarStart = offset + UTF8.width(scalar)
            offset = scalarStart
        case .emptyInput: return -1
        case .error: return scalarStart
        }
    }
}
