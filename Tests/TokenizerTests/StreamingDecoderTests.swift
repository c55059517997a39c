import Foundation
import Tokenizer
import XCTest

/// Streaming decoding returns, id by id, pieces of text that add up to the decoding of all the ids, while each id
/// decodes only a short window of ids.
final class StreamingDecoderTests: XCTestCase {
    func testPiecesAddUpToTheWholeDecoding() throws {
        for name in ["bpe.model", "unigram.model"] {
            let tokenizer = try SentencePieceTokenizer(modelPath: TokenizerFixtures.path(name))
            // Text with words, accents, CJK and emoji (byte-fallback pieces), encoded; then random ids.
            let text = "The café 東京 🙂 is  open, naïve 😀😀 x\ny"
            var state: UInt64 = 5  // a fixed linear congruential sequence of ids
            let random = (0..<300).map { _ -> Int32 in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Int32((state >> 33) % UInt64(tokenizer.vocabSize))
            }
            for ids in [try tokenizer.encode(text), random, [tokenizer.bosId] + (try tokenizer.encode(text)) + random] {
                var decoder = StreamingDecoder(tokenizer: tokenizer)
                var streamed = "", returned = 0, widestWindow = 0
                for id in ids {
                    let piece = try decoder.append(id)
                    if !piece.isEmpty { returned += 1 }
                    streamed += piece
                    widestWindow = max(widestWindow, decoder.ids.count - decoder.prefixOffset)
                }
                let whole = try tokenizer.decode(ids)
                XCTAssertTrue(whole.hasPrefix(streamed), "\(name): streamed text is not a prefix of the decoding")
                // only a character still waiting for its bytes may be missing at the end
                XCTAssertLessThanOrEqual(whole.count - streamed.count, 1, name)
                XCTAssertGreaterThan(returned, ids.count / 3, "\(name): text comes as the ids come, not at the end")
                XCTAssertLessThan(widestWindow, 12, "\(name): the decoding window keeps up")
            }
        }
    }
}
