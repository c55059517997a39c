import Foundation
import XCTest
import MiniGPT
import Tensors
import Tokenizer
@testable import InstructionTuning

final class DataEncodingTests: DataTestCase {
    let records = [
        InstructionRecord(instruction: "Say hello.", output: "Hello there!"),
        InstructionRecord(instruction: "Add the two numbers.", input: "2 and 3", output: "The sum is 5."),
    ]

    func tokenizer() throws -> SentencePieceTokenizer {
        let path = DataFixtures.path("tokenizer/unigram.model")
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), "fixture \(path)")
        return try SentencePieceTokenizer(modelPath: path)
    }

    func testIdsLayoutAndPromptLength() throws {
        let tokenizer = try tokenizer()
        let encoder = ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096)
        let result = try encoder.encode(records)
        XCTAssertEqual(result.truncated, 0)
        XCTAssertEqual(result.skipped, 0)
        XCTAssertEqual(result.examples.count, 2)
        for (record, example) in zip(records, result.examples) {
            let prompt = tokenizer.encode(PromptTemplate.alpaca.prompt(instruction: record.instruction, input: record.input))
            let output = tokenizer.encode(record.output)
            XCTAssertFalse(prompt.isEmpty)
            XCTAssertFalse(output.isEmpty)
            XCTAssertEqual(example.ids, [1] + prompt + output + [2])
            XCTAssertEqual(example.promptLength, 1 + prompt.count)
            XCTAssertEqual(example.targetCount(maskPrompt: true), output.count + 1)
            XCTAssertEqual(example.targetCount(maskPrompt: false), example.ids.count - 1)
            XCTAssertEqual(try tokenizer.decode(Array(example.ids[example.promptLength...])), record.output)
        }
        // The ids given to the encoder win over the tokenizer's.
        let custom = ExampleEncoder(tokenizer: tokenizer, bosId: 3, eosId: 4, maxSeqLen: 4096)
        let example = try custom.encode([records[0]]).examples[0]
        XCTAssertEqual(example.ids.first, 3)
        XCTAssertEqual(example.ids.last, 4)
    }

    /// A prompt/completion record is [BOS] + prompt + completion + [EOS] with no template; a text record has an
    /// empty prompt, so every token after BOS carries a loss.
    func testPromptCompletionAndTextRecordsSkipTheTemplate() throws {
        let tokenizer = try tokenizer()
        let encoder = ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096)
        let examples = try encoder.encode([InstructionRecord(prompt: "Q: say hello", completion: " Hello there!"),
                                           InstructionRecord(prompt: "", completion: "Hello there!")]).examples
        let prompt = tokenizer.encode("Q: say hello"), completion = tokenizer.encode(" Hello there!")
        XCTAssertEqual(examples[0].ids, [1] + prompt + completion + [2])
        XCTAssertEqual(examples[0].promptLength, 1 + prompt.count)
        XCTAssertEqual(examples[1].ids, [1] + tokenizer.encode("Hello there!") + [2])
        XCTAssertEqual(examples[1].promptLength, 1)
        XCTAssertEqual(examples[1].targetCount(maskPrompt: true), examples[1].ids.count - 1)
    }

    func testTokenBatchPacksTheExamplesAndMasksThePrompt() throws {
        let tokenizer = try tokenizer()
        let examples = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096).encode(records).examples
        let (long, short) = examples[0].ids.count >= examples[1].ids.count ? (examples[0], examples[1]) : (examples[1], examples[0])
        XCTAssertLessThan(short.ids.count, long.ids.count)
        for maskPrompt in [true, false] {
            let batch = Batcher.makeTokenBatch([short, long], maskPrompt: maskPrompt)
            XCTAssertEqual(batch.batch, 2)
            XCTAssertEqual(batch.seqLen, long.ids.count)
            XCTAssertEqual(batch.lengths, [Int32(short.ids.count), Int32(long.ids.count)])
            // No padding: the examples' rows back to back.
            XCTAssertEqual(batch.starts, [0, short.ids.count, short.ids.count + long.ids.count])
            XCTAssertEqual(batch.rows, short.ids.count + long.ids.count)
            XCTAssertEqual(batch.ids.count, batch.rows)
            XCTAssertEqual(batch.positions, (0..<short.ids.count).map(Int32.init) + (0..<long.ids.count).map(Int32.init))
            for (b, example) in [short, long].enumerated() {
                let row = batch.starts[b]
                for i in 0..<example.ids.count {
                    let id = batch.ids[row + i], target = batch.targets[row + i]
                    XCTAssertEqual(id, example.ids[i])
                    let counted = i + 1 < example.ids.count && (!maskPrompt || i + 1 >= example.promptLength)
                    XCTAssertEqual(target, counted ? example.ids[i + 1] : -1, "row \(b) position \(i) mask \(maskPrompt)")
                }
            }
            // Masked: the first target is the first output token, predicted from the prompt's last position.
            if maskPrompt {
                let row = batch.starts[1]  // `long` is the second example
                XCTAssertEqual(batch.targets[row + long.promptLength - 2], -1)
                XCTAssertEqual(batch.targets[row + long.promptLength - 1], long.ids[long.promptLength])
            }
            XCTAssertEqual(batch.targetCount, short.targetCount(maskPrompt: maskPrompt) + long.targetCount(maskPrompt: maskPrompt))
        }
        let encoder = ExampleEncoder(tokenizer: tokenizer, maskPrompt: false, maxSeqLen: 4096)
        XCTAssertEqual(encoder.tokenBatch([short]).targetCount, short.ids.count - 1)
    }

    func testTruncationAndSkipCounts() throws {
        let tokenizer = try tokenizer()
        let full = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096).encode(records).examples
        // A limit one token past the shorter prompt: that example keeps one response token, the other keeps none.
        let short = try XCTUnwrap(full.min { $0.promptLength < $1.promptLength })
        let long = try XCTUnwrap(full.max { $0.promptLength < $1.promptLength })
        XCTAssertLessThan(short.promptLength + 1, long.promptLength)
        let limit = short.promptLength + 1
        XCTAssertLessThan(limit, short.ids.count)

        let truncating = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: limit, overflow: .truncate).encode(records)
        XCTAssertEqual(truncating.truncated, 1)
        XCTAssertEqual(truncating.skipped, 1, "the longer prompt fills the limit, so it is skipped")
        XCTAssertEqual(truncating.examples, [EncodedExample(ids: Array(short.ids.prefix(limit)), promptLength: short.promptLength)])
        XCTAssertEqual(truncating.examples[0].targetCount(maskPrompt: true), 1)

        let skipping = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: long.ids.count - 1, overflow: .skip).encode(records)
        XCTAssertEqual(skipping.truncated, 0)
        XCTAssertEqual(skipping.skipped, 1)
        XCTAssertEqual(skipping.examples, [short])

        let exact = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: long.ids.count, overflow: .skip).encode(records)
        XCTAssertEqual(exact.examples.count, 2, "an example of exactly max-seq-len tokens fits")
        XCTAssertEqual(exact.skipped + exact.truncated, 0)
    }

    func testAllExamplesTooLong() throws {
        let tokenizer = try tokenizer()
        assertError(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 8, overflow: .truncate).encode(records),
                    contains: ["all 2 examples are longer than --max-seq-len 8"])
        assertError(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 8, overflow: .skip).encode(records),
                    contains: ["all 2 examples are longer than --max-seq-len 8"])
        XCTAssertEqual(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 8).encode([]).examples, [])
    }

    func testBadSettings() throws {
        let tokenizer = try tokenizer()
        assertError(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 1).encode(records), contains: ["--max-seq-len must be at least 2"])
        assertError(try ExampleEncoder(tokenizer: tokenizer, bosId: 400, maxSeqLen: 64).encode(records),
                    contains: ["unigram.model", "BOS id 400 is outside the vocabulary of 400 pieces"])
        assertError(try ExampleEncoder(tokenizer: tokenizer, eosId: -1, maxSeqLen: 64).encode(records),
                    contains: ["the tokenizer has no EOS id"])
    }

    /// The Swift pipeline (loader, template, encoder) reproduces the ids that Python sentencepiece gave the
    /// PEFT training fixtures (scripts/make_peft_fixtures.py), whose prompt_length excludes BOS.
    func testReproducesPythonEncodingOfTrainingFixtures() throws {
        for name in ["train3", "train3-wd"] {
            let directory = DataFixtures.path("peft/\(name)")
            let encodedPath = directory + "/encoded.json"
            guard FileManager.default.fileExists(atPath: encodedPath) else {
                XCTFail("missing fixture \(encodedPath)")
                continue
            }
            let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: encodedPath))) as? [[String: Any]])
            let tokenizer = try SentencePieceTokenizer(modelPath: DataFixtures.path("models/gqa/tokenizer.model"))
            let records = try InstructionDataset.load(path: directory + "/data.json")
            let result = try ExampleEncoder(tokenizer: tokenizer, template: .alpaca, bosId: 1, eosId: 2, maxSeqLen: 100_000)
                .encode(records)
            XCTAssertEqual(result.examples.count, expected.count, name)
            for (n, (example, want)) in zip(result.examples, expected).enumerated() {
                let ids = try XCTUnwrap(want["ids"] as? [Int]).map(Int32.init)
                let promptLength = try XCTUnwrap(want["prompt_length"] as? Int)
                let targets = try XCTUnwrap(want["targets"] as? Int)
                XCTAssertEqual(example.ids, ids, "\(name) record \(n + 1)")
                XCTAssertEqual(example.promptLength, promptLength + 1, "\(name) record \(n + 1)")
                XCTAssertEqual(example.targetCount(maskPrompt: true), targets, "\(name) record \(n + 1)")
            }
            // command.txt: one batch of all 4 records carries 28 targets.
            XCTAssertEqual(Batcher.makeTokenBatch(result.examples, maskPrompt: true).targetCount,
                           expected.compactMap { $0["targets"] as? Int }.reduce(0, +))
        }
    }
}
