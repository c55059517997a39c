import Checkpoints
import MiniGPT
import Targeting
import Tensors
import XCTest

/// Gradient checkpointing (`LlamaModel.gradientCheckpointing`) changes where activations live, not what is
/// computed: with every kind of adapter, with dropout, on padded and packed batches and over several steps, the
/// losses, the adapter gradients and the dropout generators are the same bits as without it.
final class GradientCheckpointingTests: XCTestCase {
    enum Kind { case lora, dora, adalora, qlora }

    /// A random 4-block model; adapters on blocks 1 and 3, so block 0 runs below the lowest adapted one and
    /// block 2 between two adapted ones.
    func makeSetup(_ kind: Kind, dropout: Double, checkpointing: Bool) throws -> (LlamaModel, any TrainableAdapters) {
        let config = tinyConfig(layers: 4, hidden: 64)
        let weights: LlamaWeights
        if kind == .qlora {
            // NF4 projections (blocks of 64): the frozen products dequantize tiles on the fly
            weights = try LlamaWeights.random(config: config, seed: 7, quantization: .nf4(doubleQuant: true))
        } else {
            weights = LlamaWeights.random(config: config, seed: 7).weights
            var rng = RandomGenerator(seed: 11)
            for (name, t) in weights.named where !name.hasSuffix("norm.weight") {
                rng.fillNormal(t.data, count: t.count, std: 0.3)
            }
        }
        let model = LlamaModel(weights: weights)
        model.gradientCheckpointing = checkpointing
        let adapters: any TrainableAdapters
        switch kind {
        case .lora, .dora, .qlora:
            let lora = LoRAConfig(r: 3, loraAlpha: 6, loraDropout: dropout, useDora: kind == .dora)
            adapters = try AdapterSet(config: lora, targets: Projection.allCases, layers: [1, 3], dims: model.dims,
                                      initialization: .random, seed: 5, base: weights)
        case .adalora:
            let schedule = AdaLoRASchedule(targetRank: 2)
            let ada = AdaLoRAConfig(targets: Projection.allCases, layers: [1, 3], initR: 4, targetR: 2, loraAlpha: 8,
                                    loraDropout: dropout, schedule: schedule, totalStep: 10)
            let set = try AdaLoRASet(config: ada, dims: model.dims, seed: 5)
            // non-zero E and B, so that every factor has a gradient
            var fill = RandomGenerator(seed: 9)
            fill.fillNormal(set.parameters.data, count: set.parameters.count, std: 0.4)
            adapters = set
        }
        try adapters.attach(to: model)
        return (model, adapters)
    }

    /// Three backward passes (padded, packed, then padded again after an evaluation) with and without
    /// checkpointing, compared bit for bit.
    func checkSameBits(_ kind: Kind, dropout: Double) throws {
        Threads.set(2)
        let sequences: [[Int32]] = [[1, 5, 9, 13, 2, 7, 11], [1, 20, 3], [1, 4, 4, 8, 15]]
        let packed = TokenBatch(packing: sequences, targets: sequences.map { Array($0.dropFirst()) + [-1] })
        let padded = TokenBatch(sequences: sequences)
        var runs: [(losses: [UInt64], gradients: [[Float]], states: [RandomGenerator])] = []
        for checkpointing in [false, true] {
            let (model, adapters) = try makeSetup(kind, dropout: dropout, checkpointing: checkpointing)
            var losses: [UInt64] = [], gradients: [[Float]] = []
            for (i, batch) in [padded, packed, padded].enumerated() {
                adapters.zeroGradients()
                if i == 2 { _ = try model.loss(packed, backward: false, training: false) }
                let loss = try model.loss(batch, backward: true, gradScale: 1 / Float(batch.targetCount), training: true)
                losses.append(loss.sum.bitPattern)
                gradients.append(adapters.gradients.array)
            }
            XCTAssertTrue(gradients[0].contains { $0 != 0 })
            runs.append((losses, gradients, adapters.dropoutStates))
        }
        XCTAssertEqual(runs[0].losses, runs[1].losses, "losses")
        for step in 0..<3 {
            let (a, b) = (runs[0].gradients[step], runs[1].gradients[step])
            XCTAssertEqual(a.count, b.count)
            let differing = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(differing, 0, "step \(step): \(differing) of \(a.count) gradients differ")
        }
        XCTAssertEqual(runs[0].states, runs[1].states, "dropout generators")
    }

    func testLoRAWithDropout() throws { try checkSameBits(.lora, dropout: 0.2) }
    func testLoRAWithoutDropout() throws { try checkSameBits(.lora, dropout: 0) }
    func testDoRAWithDropout() throws { try checkSameBits(.dora, dropout: 0.2) }
    func testDoRAWithoutDropout() throws { try checkSameBits(.dora, dropout: 0) }
    func testAdaLoRAWithDropout() throws { try checkSameBits(.adalora, dropout: 0.2) }
    func testQLoRAWithDropout() throws { try checkSameBits(.qlora, dropout: 0.1) }

    /// Replaying a forward's dropout: the second forward draws the first one's mask and leaves the generator where
    /// the first left it; a forward without dropout replays as a no-op.
    func testReplayLastDropoutDrawsTheSameMask() throws {
        Threads.set(1)
        let (model, adapters) = try makeSetup(.lora, dropout: 0.5, checkpointing: false)
        let set = try XCTUnwrap(adapters as? AdapterSet)
        let adapter = try XCTUnwrap(set.adapter(layer: 1, projection: .up))
        let rows = 6, input = Tensor(shape: [rows, adapter.inFeatures])
        var rng = RandomGenerator(seed: 3)
        rng.fillNormal(input.data, count: input.count, std: 1)
        func forward(training: Bool) -> [Float] {
            let out = Tensor(shape: [rows, adapter.outFeatures])
            adapter.forward(out: out.data, input: input.data, rows: rows, training: training)
            return out.array
        }
        let first = forward(training: true), after = adapter.dropoutRNG
        adapter.replayLastDropout()
        XCTAssertEqual(forward(training: true), first)
        XCTAssertEqual(adapter.dropoutRNG, after)
        XCTAssertNotEqual(forward(training: true), first, "a new forward draws a new mask")
        _ = forward(training: false)
        let state = adapter.dropoutRNG
        adapter.replayLastDropout()
        XCTAssertEqual(adapter.dropoutRNG, state)
        _ = model
    }
}
