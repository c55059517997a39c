import Checkpoints
import MiniGPT
import Targeting
import Tensors
import XCTest

/// Whole-model finite-difference check of adapter gradients: a tiny random LLaMA with adapters on all seven
/// projections of layer 1 only, so the backward stops at layer 1.
final class AdapterGradientTests: XCTestCase {
    func makeModel() -> LlamaModel {
        let config = tinyConfig()
        let (weights, _) = LlamaWeights.random(config: config, seed: 7)
        // Larger weights than the 0.02 default, so that every path carries signal.
        var rng = RandomGenerator(seed: 11)
        for (name, t) in weights.named {
            if name.hasSuffix("norm.weight") { rng.fillUniform(t.data, count: t.count, low: 0.5, high: 1.5) }
            else { rng.fillNormal(t.data, count: t.count, std: 0.3) }
        }
        return LlamaModel(weights: weights)
    }

    func checkGradients(dropout: Double) throws {
        Threads.set(1)
        let model = makeModel()
        let config = LoRAConfig(r: 3, loraAlpha: 6, loraDropout: dropout)
        // init_lora_weights false: B random and non-zero, so gradients reach A too.
        let set = try AdapterSet(config: config, targets: Projection.allCases, layers: [1], dims: model.dims,
                                 initialization: .random, seed: 5)
        XCTAssertEqual(set.adapters.count, 7)
        XCTAssertFalse(set.allBZero)
        XCTAssertEqual(set.config.layersToTransform, [1])
        try set.attach(to: model)

        let batch = TokenBatch(sequences: [[1, 5, 9, 13, 2, 7], [1, 20, 3]])
        let count = batch.targetCount
        let masks = set.dropoutStates
        func meanLoss() throws -> Double {
            try set.restoreDropoutStates(masks)   // the same dropout masks in every evaluation
            let (sum, n) = try model.loss(batch, backward: false, training: true)
            return sum / Double(n)
        }
        set.zeroGradients()
        try set.restoreDropoutStates(masks)
        _ = try model.loss(batch, backward: true, gradScale: 1 / Float(count), training: true)
        XCTAssertTrue(set.gradients.array.contains { $0 != 0 })

        let epsilon: Float = 1e-2
        var checked = 0
        for adapter in set.adapters {
            for (label, parameter, gradient) in [("A", adapter.a, adapter.aGradient), ("B", adapter.b, adapter.bGradient)] {
                for i in stride(from: 0, to: parameter.count, by: max(1, parameter.count / 6)) {
                    let saved = parameter[i]
                    parameter[i] = saved + epsilon
                    let plus = try meanLoss()
                    parameter[i] = saved - epsilon
                    let minus = try meanLoss()
                    parameter[i] = saved
                    let numeric = Float((plus - minus) / Double(2 * epsilon))
                    XCTAssertEqual(gradient[i], numeric, accuracy: 2e-3 + 2e-2 * abs(numeric),
                                   "\(adapter.site.moduleName) \(label)[\(i)]")
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(checked, 80)
    }

    func testAdapterGradientsOnLayerOne() throws { try checkGradients(dropout: 0) }
    func testAdapterGradientsOnLayerOneWithDropout() throws { try checkGradients(dropout: 0.2) }

    /// The flat buffers follow the documented order: sites by (layer, projection), A then B.
    func testFlatLayoutAndInitialisation() throws {
        let dims = ModelDimensions(tinyConfig(layers: 3))
        let config = LoRAConfig(r: 4, loraAlpha: 8, rankPattern: ["o_proj": 2])
        let set = try AdapterSet(config: config, targets: [.o, .q, .down], layers: [2, 0], dims: dims, seed: 1)
        XCTAssertEqual(set.adapters.map(\.site.moduleName), [
            "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj",
            "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.o_proj", "model.layers.2.mlp.down_proj"])
        var offset = 0
        for adapter in set.adapters {
            XCTAssertEqual(adapter.a.data, set.parameters.data + offset)
            XCTAssertEqual(adapter.aGradient.data, set.gradients.data + offset)
            offset += adapter.a.count
            XCTAssertEqual(adapter.b.data, set.parameters.data + offset)
            XCTAssertEqual(adapter.bGradient.data, set.gradients.data + offset)
            offset += adapter.b.count
        }
        XCTAssertEqual(offset, set.trainableCount)
        XCTAssertEqual(set.adapter(layer: 0, projection: .o)?.rank, 2)
        XCTAssertEqual(set.adapter(layer: 0, projection: .o)?.scale, 4)
        XCTAssertNil(set.adapter(layer: 1, projection: .q))
        XCTAssertNil(set.deltaWeight(layer: 1, projection: .q))
        // Kaiming: A in ±1/√in and not all zero, B zero: the adapter starts as a no-op.
        XCTAssertTrue(set.allBZero)
        for adapter in set.adapters {
            let bound = 1 / Float(adapter.inFeatures).squareRoot()
            XCTAssertTrue(adapter.a.array.allSatisfy { abs($0) <= bound })
            XCTAssertTrue(adapter.a.array.contains { $0 != 0 })
        }
        // Same seed, same values; Gaussian A has std 1/r.
        let again = try AdapterSet(config: config, targets: [.o, .q, .down], layers: [2, 0], dims: dims, seed: 1)
        XCTAssertEqual(again.parameters.array, set.parameters.array)
        let gaussian = try AdapterSet(config: LoRAConfig(r: 4, loraAlpha: 8), targets: [.up], layers: [0, 1, 2],
                                      dims: dims, initialization: .gaussian, seed: 2)
        let values = gaussian.adapters.flatMap(\.a.array)
        let std = (values.reduce(0) { $0 + Double($1 * $1) } / Double(values.count)).squareRoot()
        XCTAssertEqual(std, 0.25, accuracy: 0.03)
        XCTAssertEqual(gaussian.config.initLoraWeights, .method("gaussian"))
        XCTAssertNil(gaussian.config.layersToTransform)   // every layer
    }

    func testEmptyOrImpossibleSetsAreRefused() {
        let dims = ModelDimensions(tinyConfig())
        let config = LoRAConfig(r: 4, loraAlpha: 8)
        assertError(["no target projections"]) {
            try AdapterSet(config: config, targets: [], layers: [0], dims: dims)
        }
        assertError(["no layers"]) { try AdapterSet(config: config, targets: [.q], layers: [], dims: dims) }
        assertError(["layer 2 does not exist", "2 layers (0-1)"]) {
            try AdapterSet(config: config, targets: [.q], layers: [2], dims: dims)
        }
        assertError(["r is 0"]) { try AdapterSet(config: LoRAConfig(r: 0), targets: [.q], layers: [0], dims: dims) }
        let model = LlamaModel(weights: LlamaWeights.random(config: tinyConfig(hidden: 32), seed: 1).weights)
        assertError(["does not fit the model"]) {
            try AdapterSet(config: config, targets: [.q], layers: [0], dims: dims).attach(to: model)
        }
    }
}
