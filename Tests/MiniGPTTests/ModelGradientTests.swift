import Checkpoints
@testable import MiniGPT
import Tensors
import XCTest

/// Finite-difference check of the whole model's backward: every kind of weight, GQA, padding, tied embeddings.
final class ModelGradientTests: XCTestCase {
    static func tinyConfig(tied: Bool) -> LlamaConfig {
        LlamaConfig(vocabSize: 23, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2, numAttentionHeads: 4,
                    numKeyValueHeads: 2, headDim: 4, rmsNormEps: 1e-5, maxPositionEmbeddings: 32,
                    tieWordEmbeddings: tied, bosTokenId: 1, eosTokenId: 2, padTokenId: nil, ropeTheta: 10000)
    }

    /// Mean loss over the batch's targets.
    static func meanLoss(_ model: LlamaModel, _ batch: TokenBatch) throws -> Double {
        let (sum, count) = try model.loss(batch, backward: false)
        return sum / Double(count)
    }

    /// Two sequences of different lengths, padded or packed (targets: the next token, none on the last).
    static func batch(packed: Bool) -> TokenBatch {
        let sequences: [[Int32]] = [[1, 5, 9, 13, 2, 7], [1, 20, 3]]
        guard packed else { return TokenBatch(sequences: sequences) }
        return TokenBatch(packing: sequences, targets: sequences.map { Array($0.dropFirst()) + [-1] })
    }

    func checkGradients(tied: Bool, packed: Bool = false) throws {
        Threads.set(1)
        let config = Self.tinyConfig(tied: tied)
        let (weights, _) = LlamaWeights.random(config: config, seed: 7)
        // Larger weights than the 0.02 default, so every path carries signal, and non-unit norms.
        var rng = RandomGenerator(seed: 11)
        for (name, t) in weights.named {
            if name.hasSuffix("norm.weight") { rng.fillUniform(t.data, count: t.count, low: 0.5, high: 1.5) }
            else { rng.fillNormal(t.data, count: t.count, std: 0.3) }
        }
        let model = LlamaModel(weights: weights)
        let (grads, _) = LlamaWeights.zeros(config: config)
        model.weightGradients = grads
        let batch = Self.batch(packed: packed)
        let count = batch.targetCount
        _ = try model.loss(batch, backward: true, gradScale: 1 / Float(count))

        let epsilon: Float = 1e-2
        var checked = 0
        for ((name, w), (_, g)) in zip(weights.named, grads.named) {
            // A few entries of every tensor, spread over it.
            for i in stride(from: 0, to: w.count, by: max(1, w.count / 5)) {
                let saved = w[i]
                w[i] = saved + epsilon
                let plus = try Self.meanLoss(model, batch)
                w[i] = saved - epsilon
                let minus = try Self.meanLoss(model, batch)
                w[i] = saved
                let numeric = Float((plus - minus) / Double(2 * epsilon))
                let analytic = g[i]
                let tolerance = 2e-3 + 2e-2 * abs(numeric)
                XCTAssertEqual(analytic, numeric, accuracy: tolerance, "\(name)[\(i)]")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 50)
    }

    func testWholeModelGradientsUntied() throws { try checkGradients(tied: false) }
    func testWholeModelGradientsTied() throws { try checkGradients(tied: true) }
    func testWholeModelGradientsPacked() throws { try checkGradients(tied: false, packed: true) }

    /// The packed batch (no padding rows) gives the padded batch's loss and every weight gradient.
    func testPackedBatchGivesThePaddedLossAndGradients() throws {
        Threads.set(2)
        let config = Self.tinyConfig(tied: false)
        let (weights, _) = LlamaWeights.random(config: config, seed: 5)
        let model = LlamaModel(weights: weights)
        var results: [(loss: Double, gradients: [[Float]])] = []
        for packed in [false, true] {
            let (grads, _) = LlamaWeights.zeros(config: config)
            model.weightGradients = grads
            let batch = Self.batch(packed: packed)
            XCTAssertEqual(batch.rows, packed ? 9 : 12)
            let loss = try model.loss(batch, backward: true, gradScale: 1 / Float(batch.targetCount))
            results.append((loss.sum, grads.named.map { $0.1.array }))
        }
        XCTAssertEqual(results[0].loss, results[1].loss, accuracy: 1e-5 * abs(results[0].loss))
        for (name, (a, b)) in zip(weights.named.map(\.0), zip(results[0].gradients, results[1].gradients)) {
            for i in a.indices { XCTAssertEqual(a[i], b[i], accuracy: 1e-6 + 1e-5 * abs(a[i]), "\(name)[\(i)]") }
        }
    }

    /// Full-parameter training with gradient checkpointing: the loss and every weight gradient are the same bits
    /// as with every block's activations kept, on padded and packed batches; only block inputs are kept.
    func testGradientCheckpointingGivesTheSameBits() throws {
        Threads.set(2)
        let config = Self.tinyConfig(tied: true)
        let (weights, _) = LlamaWeights.random(config: config, seed: 5)
        var results: [[UInt32]] = []
        for checkpointing in [false, true] {
            let model = LlamaModel(weights: weights)
            model.gradientCheckpointing = checkpointing
            let (grads, _) = LlamaWeights.zeros(config: config)
            model.weightGradients = grads
            var bits: [UInt32] = []
            for packed in [false, true] {
                for (_, g) in grads.named { g.zero() }
                let batch = Self.batch(packed: packed)
                let loss = try model.loss(batch, backward: true, gradScale: 1 / Float(batch.targetCount))
                bits.append(contentsOf: [UInt32(truncatingIfNeeded: loss.sum.bitPattern),
                                         UInt32(truncatingIfNeeded: loss.sum.bitPattern >> 32)])
                bits.append(contentsOf: grads.named.flatMap { $0.1.array.map(\.bitPattern) })
            }
            let activations = try XCTUnwrap(model.activations)
            XCTAssertEqual(activations.recomputes, checkpointing)
            XCTAssertEqual(activations.stored.count, checkpointing ? 0 : config.numHiddenLayers)
            XCTAssertEqual(activations.checkpoints.count, checkpointing ? config.numHiddenLayers : 0)
            results.append(bits)
        }
        XCTAssertEqual(results[0].count, results[1].count)
        XCTAssertTrue(results[0] == results[1], "losses or gradients differ with gradient checkpointing")
    }

    /// Same inputs, same thread count: the same bits.
    func testLossIsDeterministic() throws {
        Threads.set(2)
        let config = Self.tinyConfig(tied: false)
        let (weights, _) = LlamaWeights.random(config: config, seed: 3)
        let model = LlamaModel(weights: weights)
        let batch = TokenBatch(sequences: [[1, 5, 9, 13, 2, 7], [1, 20, 3]])
        let a = try model.loss(batch, backward: false).sum
        let b = try model.loss(batch, backward: false).sum
        XCTAssertEqual(a.bitPattern, b.bitPattern)
    }
}

/// The activation buffers of packed batches: reused while batches fit, grown when one does not, and not grown by
/// evaluation between training steps.
final class ActivationBufferTests: XCTestCase {
    func testBuffersSettleAcrossTrainingAndEvaluation() throws {
        Threads.set(1)
        let config = ModelGradientTests.tinyConfig(tied: false)
        let (weights, _) = LlamaWeights.random(config: config, seed: 3)
        let model = LlamaModel(weights: weights)
        let (grads, _) = LlamaWeights.zeros(config: config)
        model.weightGradients = grads
        func batch(_ lengths: [Int]) -> TokenBatch {
            let sequences = lengths.map { n in (0..<n).map { Int32(1 + $0 % 20) } }
            return TokenBatch(packing: sequences, targets: sequences.map { Array($0.dropFirst()) + [-1] })
        }
        _ = try model.loss(batch([10, 20]), backward: true)
        let first = try XCTUnwrap(model.activations?.capacity)
        XCTAssertEqual(first, 64, "30 rows, rounded up to 64")
        _ = try model.loss(batch([5, 5]), backward: true)
        XCTAssertEqual(model.activations?.capacity, first, "a smaller batch reuses the buffers")
        _ = try model.loss(batch([40, 30]), backward: true)
        let grown = try XCTUnwrap(model.activations?.capacity)
        XCTAssertGreaterThanOrEqual(grown, 80)
        // Evaluation (no backward) and training alternate without growing anything.
        for _ in 0..<5 {
            _ = try model.loss(batch([40, 30]), backward: false)
            _ = try model.loss(batch([40, 30]), backward: true)
        }
        XCTAssertEqual(model.activations?.capacity, grown)
        // A model that only evaluated first keeps its room when training needs the blocks kept.
        let fresh = LlamaModel(weights: weights)
        fresh.weightGradients = grads
        _ = try fresh.loss(batch([40, 30]), backward: false)
        let evaluated = try XCTUnwrap(fresh.activations?.capacity)
        _ = try fresh.loss(batch([10]), backward: true)
        XCTAssertEqual(fresh.activations?.capacity, evaluated)
    }
}
