import Checkpoints
import MiniGPT
import Tensors
import XCTest

/// Logits against Hugging Face transformers' LlamaForCausalLM (fixtures by scripts/make_model_fixtures.py).
final class GoldenLogitsTests: XCTestCase {
    static let models = ["gqa", "tied", "headdim", "sharded-bf16", "f16"]

    /// A fixture's model, its sequences (unpadded) and transformers' logits of their padded batch (B, T, V).
    func fixture(_ name: String) throws -> (weights: LlamaWeights, sequences: [[Int32]], want: Tensor, seqLen: Int) {
        let weights = try LlamaWeights.load(directory: Fixtures.model(name))
        let expected = try Fixtures.expected(name)
        let ids = try expected.tensor("ids"), lengths = try expected.tensor("lengths")
        let want = try expected.tensor("logits")
        let (b, t) = (ids.shape[0], ids.shape[1])
        XCTAssertEqual(want.shape, [b, t, weights.dims.vocab])
        let sequences = (0..<b).map { s in (0..<Int(lengths[s])).map { Int32(ids[s * t + $0]) } }
        return (weights, sequences, want, t)
    }

    func testPaddedBatchMatchesTransformers() throws {
        for name in Self.models {
            let (weights, sequences, want, t) = try fixture(name)
            let v = weights.dims.vocab
            let batch = TokenBatch(sequences: sequences)
            XCTAssertEqual(batch.seqLen, t)
            let got = try LlamaModel(weights: weights).logits(batch)
            var worst: Float = 0
            for (s, sequence) in sequences.enumerated() {
                for p in 0..<sequence.count {   // padded positions are not compared
                    let row = (s * t + p) * v
                    worst = max(worst, maxAbsDifference(got.data + row, want.data + row, count: v))
                }
            }
            print("\(name): padded batch max |Δlogit| = \(worst)")
            XCTAssertLessThan(worst, 1e-4, name)
        }
    }

    /// The same sequences packed (no padding rows): each sequence's logits are transformers' of the padded batch.
    func testPackedBatchMatchesTransformers() throws {
        for name in Self.models {
            let (weights, sequences, want, t) = try fixture(name)
            let v = weights.dims.vocab
            let batch = TokenBatch(packing: sequences, targets: sequences.map { $0.map { _ in -1 } })
            XCTAssertEqual(batch.rows, sequences.reduce(0) { $0 + $1.count })
            XCTAssertLessThan(batch.rows, sequences.count * t, "the fixture has padding to leave out")
            let got = try LlamaModel(weights: weights).logits(batch)
            var worst: Float = 0
            for (s, sequence) in sequences.enumerated() {
                for p in 0..<sequence.count {
                    worst = max(worst, maxAbsDifference(got.data + (batch.starts[s] + p) * v,
                                                        want.data + (s * t + p) * v, count: v))
                }
            }
            print("\(name): packed batch max |Δlogit| = \(worst)")
            XCTAssertLessThan(worst, 1e-4, name)
        }
    }

    func testSingleSequenceMatchesTransformers() throws {
        for name in Self.models {
            let weights = try LlamaWeights.load(directory: Fixtures.model(name))
            let expected = try Fixtures.expected(name)
            let ids = try expected.tensor("ids"), lengths = try expected.tensor("lengths")
            let want = try expected.tensor("single_logits")
            let tokens = (0..<Int(lengths[0])).map { Int32(ids[$0]) }
            let got = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [tokens]))
            XCTAssertEqual(got.count, want.count)
            let worst = maxAbsDifference(got.data, want.data, count: want.count)
            print("\(name): single sequence max |Δlogit| = \(worst)")
            XCTAssertLessThan(worst, 1e-4, name)
        }
    }

    func testGreedyGenerationMatchesTransformers() throws {
        for name in Self.models {
            let weights = try LlamaWeights.load(directory: Fixtures.model(name))
            let expected = try Fixtures.expected(name)
            let ids = try expected.tensor("ids"), lengths = try expected.tensor("lengths")
            let greedy = try expected.tensor("greedy").array.map { Int32($0) }
            let prompt = (0..<Int(lengths[0])).map { Int32(ids[$0]) }
            let model = LlamaModel(weights: weights)
            let generator = Generator(model: model, capacity: 64)
            var sampler = Sampler(temperature: 0)
            let newTokens = greedy.count - prompt.count
            let got = try generator.generate(prompt: prompt, maxNewTokens: newTokens, sampler: &sampler,
                                             stop: Int32(weights.config.eosTokenId))
            XCTAssertEqual(prompt + got, greedy, name)
        }
    }

    /// The KV-cache path gives the same logits as the full forward, token by token.
    func testCachedGenerationMatchesFullForward() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let model = LlamaModel(weights: weights)
        let tokens: [Int32] = [1, 17, 42, 99, 5, 63, 7, 200, 11]
        let full = try model.logits(TokenBatch(sequences: [tokens]))
        let generator = Generator(model: model, capacity: 32)
        let v = weights.dims.vocab
        try generator.append(Array(tokens[0..<4]))
        XCTAssertLessThan(maxAbsDifference(generator.logits.data, full.data + 3 * v, count: v), 1e-4)
        for i in 4..<tokens.count {
            try generator.append([tokens[i]])
            XCTAssertLessThan(maxAbsDifference(generator.logits.data, full.data + i * v, count: v), 1e-4, "token \(i)")
        }
    }

    /// `generate(reusingCache: true)` keeps the cached keys and values of the longest common prefix and runs only
    /// the rest: a conversation's next turn gives the answer a fresh run gives, and a prompt that departs early
    /// keeps only what it shares.
    func testCacheReuseRunsOnlyTheNewTokens() throws {
        let model = LlamaModel(weights: try LlamaWeights.load(directory: Fixtures.model("gqa")))
        let v = model.dims.vocab
        var sampler = Sampler(temperature: 0)
        let generator = Generator(model: model, capacity: 64)
        let first: [Int32] = [1, 17, 42, 99, 5]
        let answer = try generator.generate(prompt: first, maxNewTokens: 4, sampler: &sampler, stop: nil, reusingCache: true)
        XCTAssertEqual(generator.reusedTokens, 0)
        XCTAssertEqual(generator.cachedTokens, first + answer.dropLast(), "the last token is sampled, not run")
        let second = first + answer + [63, 7, 200]
        let reused = try generator.generate(prompt: second, maxNewTokens: 6, sampler: &sampler, stop: nil, reusingCache: true)
        XCTAssertEqual(generator.reusedTokens, first.count + answer.count - 1)
        let reusedLogits = generator.logits.array
        let fresh = Generator(model: model, capacity: 64)
        XCTAssertEqual(reused, try fresh.generate(prompt: second, maxNewTokens: 6, sampler: &sampler, stop: nil))
        XCTAssertLessThan(maxAbsDifference(reusedLogits, fresh.logits.data, count: v), 1e-4)

        let third: [Int32] = [1, 17, 300, 4]
        let departed = try generator.generate(prompt: third, maxNewTokens: 3, sampler: &sampler, stop: nil, reusingCache: true)
        XCTAssertEqual(generator.reusedTokens, 2)
        XCTAssertEqual(departed, try fresh.generate(prompt: third, maxNewTokens: 3, sampler: &sampler, stop: nil))
        // the same prompt again: all but its last token come from the cache
        _ = try generator.generate(prompt: third, maxNewTokens: 1, sampler: &sampler, stop: nil, reusingCache: true)
        XCTAssertEqual(generator.reusedTokens, third.count - 1)
        let full = try model.logits(TokenBatch(sequences: [third]))
        XCTAssertLessThan(maxAbsDifference(generator.logits.data, full.data + (third.count - 1) * v, count: v), 1e-4)
    }

    func testRopeBaseSpellingsBothRead() throws {
        // The fixtures cover `rope_theta` at the top level and under `rope_parameters`.
        var spellings = Set<String>()
        for name in Self.models {
            let text = try String(contentsOfFile: Fixtures.model(name) + "/config.json", encoding: .utf8)
            if text.contains("\"rope_parameters\"") { spellings.insert("rope_parameters") }
            if text.range(of: #"^\s*"rope_theta""#, options: .regularExpression) != nil
                || text.contains("{\"rope_theta\"") || text.contains("\n  \"rope_theta\"") {
                spellings.insert("top-level")
            }
        }
        XCTAssertEqual(spellings, ["rope_parameters", "top-level"])
    }

    func testTokenIdOutsideVocabularyIsAnError() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let model = LlamaModel(weights: weights)
        XCTAssertThrowsError(try model.logits(TokenBatch(sequences: [[1, 2, Int32(weights.dims.vocab)]]))) { error in
            XCTAssertTrue("\(error)".contains("outside the vocabulary"), "\(error)")
        }
        XCTAssertThrowsError(try model.logits(TokenBatch(sequences: [[1, -3]])))
    }
}
