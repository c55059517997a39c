import Checkpoints
import Foundation
import MiniGPT
@testable import Targeting
import Tensors
import XCTest

extension Fixtures {
    /// Tests/Fixtures/pissa (scripts/make_pissa_fixtures.py).
    static func pissa(_ name: String) -> String { root.appendingPathComponent("pissa/\(name)").path }
}

/// PiSSA initialisation against PEFT's `pissa_init`, training on the residual, and the converted rank-2r adapter
/// for the original base.
final class PiSSATests: XCTestCase {
    override func setUp() { Threads.set(1) }

    func pissaSet(_ weights: LlamaWeights, rank: Int = 4) throws -> AdapterSet {
        try AdapterSet(config: LoRAConfig(r: rank, loraAlpha: 8), targets: [.q, .v, .down], layers: [0, 1],
                       dims: weights.dims, initialization: .pissa, base: weights)
    }

    func testInitialisationMatchesPEFT() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try pissaSet(weights)
        XCTAssertEqual(set.config.initLoraWeights, .method("pissa"))
        let residual = try set.trainingBase(weights)
        let expected = try SafeTensorsFile(path: Fixtures.pissa("init.safetensors"))
        var worst: Float = 0
        for adapter in set.adapters {
            let module = adapter.site.moduleName
            let delta = adapter.deltaWeight(), want = try expected.tensor("delta." + module)
            XCTAssertEqual(delta.shape, want.shape)
            worst = max(worst, maxAbsDifference(delta.data, want.data, count: want.count))
            let base = residual.layers[adapter.site.layer].projection(adapter.site.projection)
            let wantResidual = try expected.tensor("residual." + module)
            worst = max(worst, maxAbsDifference(base.data, wantResidual.data, count: wantResidual.count))
        }
        print("PiSSA init: max |s·B·A, residual - PEFT| = \(worst)")
        XCTAssertLessThan(worst, 1e-5)
        // Untouched projections are shared, not copied.
        XCTAssertTrue(residual.layers[0].k === weights.layers[0].k)
    }

    /// At step 0 residual + adapter is the model; after a change, the saved (converted) adapter on the ORIGINAL base
    /// computes what residual + adapter computes, and resuming from it gives back the same set and residual.
    func testConvertedAdapterWorksOnTheOriginalBaseAndResumes() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try pissaSet(weights)
        let residual = try set.trainingBase(weights)
        let ids: [Int32] = [1, 17, 40, 99, 5, 250]
        let training = LlamaModel(weights: residual)
        try set.attach(to: training)
        let original = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
        let start = try training.logits(TokenBatch(sequences: [ids]))   // bound: the tensor must outlive .data
        XCTAssertLessThan(maxAbsDifference(start.data, original.data, count: original.count), 1e-4)

        var rng = RandomGenerator(seed: 2)
        for i in 0..<set.parameters.count { set.parameters.data[i] += 0.05 * rng.nextUniform() - 0.025 }
        let trained = try training.logits(TokenBatch(sequences: [ids]))
        XCTAssertGreaterThan(maxAbsDifference(trained.data, original.data, count: original.count), 0.01)

        let directory = try temporaryDirectory(self)
        try set.save(to: directory)
        let json = try readJSON(directory + "/adapter_config.json")
        XCTAssertEqual(json["r"] as? Int, 8)
        XCTAssertEqual(json["lora_alpha"] as? Int, 16)
        XCTAssertEqual(json["init_lora_weights"] as? Bool, true)
        let converted = try AdapterSet.load(directory: directory, dims: weights.dims)
        let onOriginal = LlamaModel(weights: weights)
        try converted.attach(to: onOriginal)
        let got = try onOriginal.logits(TokenBatch(sequences: [ids]))
        let difference = maxAbsDifference(got.data, trained.data, count: trained.count)
        print("PiSSA converted adapter on the original base vs residual + adapter: \(difference)")
        XCTAssertLessThan(difference, 1e-4)

        let resumed = try AdapterSet.resumePiSSA(directory: directory, config: set.config, dims: weights.dims)
        XCTAssertEqual(resumed.parameters.array, set.parameters.array)
        XCTAssertEqual(resumed.pissaInitial?.array, set.pissaInitial?.array)
        let again = try resumed.trainingBase(weights)
        for adapter in set.adapters {
            let l = adapter.site.layer, p = adapter.site.projection
            XCTAssertEqual(again.layers[l].projection(p).array, residual.layers[l].projection(p).array, adapter.site.moduleName)
        }
    }

    /// QPiSSA: PiSSA on the F32 base, then every projection stored NF4 — the residuals of the adapted ones (bit for
    /// bit what quantizing W − s·B₀·A₀ gives, also when rebuilt on resume) and the others as loading them with
    /// `--quantize nf4` would. The quantized residual plus the adapter stays closer to W than NF4(W) does (the
    /// largest singular directions are not quantized), so the run starts nearer the F32 model than QLoRA's.
    func testQuantizedResidualBase() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let quantized = try LlamaWeights.load(directory: Fixtures.model("gqa"), quantization: .nf4(doubleQuant: true))
        let set = try pissaSet(weights)
        let f32Residual = try set.trainingBase(weights)
        let base = try set.trainingBase(weights, quantization: .nf4(doubleQuant: true))
        func codes(_ w: FrozenWeight) -> [UInt8]? { if case .nf4(let m) = w { return m.packedCodes } else { return nil } }
        var residualError = 0.0, qloraError = 0.0
        for l in 0..<weights.dims.layers {
            for p in Projection.allCases {
                let stored = base.layers[l].frozen(p)
                XCTAssertNotNil(codes(stored), "\(p) of block \(l) is not NF4")
                guard let adapter = set.adapter(layer: l, projection: p) else {
                    XCTAssertEqual(codes(stored), codes(quantized.layers[l].frozen(p)), "untouched \(p) of block \(l)")
                    continue
                }
                let want = try NF4Matrix(quantizing: f32Residual.layers[l].projection(p).data, rows: adapter.outFeatures,
                                         columns: adapter.inFeatures, doubleQuant: true, label: "residual")
                XCTAssertEqual(codes(stored), want.packedCodes, adapter.site.moduleName)
                // ‖NF4(W_res) + s·B₀·A₀ − W‖² against ‖NF4(W) − W‖²
                let w = weights.layers[l].projection(p), delta = adapter.deltaWeight()
                let approximation = stored.f32Tensor, qlora = quantized.layers[l].projection(p)
                for i in 0..<w.count {
                    residualError += pow(Double(approximation[i] + delta[i] - w[i]), 2)
                    qloraError += pow(Double(qlora[i] - w[i]), 2)
                }
            }
        }
        print("QPiSSA: ‖NF4(W_res) + s·B₀·A₀ − W‖² = \(residualError), QLoRA ‖NF4(W) − W‖² = \(qloraError) over the adapted projections")
        XCTAssertLessThan(residualError, 0.9 * qloraError)

        // resuming rebuilds the same NF4 residuals from the saved adapter
        let directory = try temporaryDirectory(self)
        try set.save(to: directory)
        let resumed = try AdapterSet.resumePiSSA(directory: directory, config: set.config, dims: weights.dims)
        let again = try resumed.trainingBase(weights, quantization: .nf4(doubleQuant: true))
        for l in 0..<weights.dims.layers {
            for p in Projection.allCases {
                XCTAssertEqual(codes(again.layers[l].frozen(p)), codes(base.layers[l].frozen(p)), "\(p) of block \(l)")
            }
        }
    }

    /// `init_lora_weights: "pissa_niter_2"` (PEFT's fast PiSSA): residual + adapter is the model at step 0, and the
    /// adapter takes nearly the energy ‖s·B·A‖² of the exact top-r part (the fixture's weights have a flat
    /// spectrum, where the top-r directions themselves are loosely determined); unknown spellings are refused.
    func testFastPiSSA() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let config = LoRAConfig(r: 4, loraAlpha: 8, initLoraWeights: .method("pissa_niter_2"))
        XCTAssertEqual(try config.initialization(), .pissaFast(powerIterations: 2))
        let set = try AdapterSet(config: config, targets: [.q, .v, .down], layers: [0, 1], dims: weights.dims,
                                 initialization: try config.initialization(), seed: 4, base: weights)
        XCTAssertEqual(set.config.initLoraWeights, .method("pissa_niter_2"))
        let residual = try set.trainingBase(weights)
        let ids: [Int32] = [1, 17, 40, 99, 5, 250]
        let training = LlamaModel(weights: residual)
        try set.attach(to: training)
        let original = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
        let start = try training.logits(TokenBatch(sequences: [ids]))
        XCTAssertLessThan(maxAbsDifference(start.data, original.data, count: original.count), 1e-4)
        let exact = try pissaSet(weights)
        var worst = 1.0
        for (fast, reference) in zip(set.adapters, exact.adapters) {
            let d = fast.deltaWeight(), want = reference.deltaWeight()
            let energy = (0..<d.count).reduce(0.0) { $0 + Double(d[$1] * d[$1]) }
            let best = (0..<want.count).reduce(0.0) { $0 + Double(want[$1] * want[$1]) }
            worst = min(worst, energy / best)
        }
        print("fast PiSSA (2 power iterations): at least \(worst) of the exact top-r energy per projection")
        XCTAssertGreaterThan(worst, 0.97)
        XCTAssertLessThanOrEqual(worst, 1.0001)
        for bad in ["pissa_niter_", "pissa_niter_x", "pissa_niter_-1", "pissa2"] {
            assertError(["init_lora_weights \"\(bad)\" is not supported"]) {
                _ = try LoRAConfig(r: 4, loraAlpha: 8, initLoraWeights: .method(bad)).initialization()
            }
        }
    }

    /// PEFT's own converted PiSSA adapter, on the original base, gives PEFT's PiSSA model's logits.
    func testPEFTConvertedAdapterMatchesPEFT() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try AdapterSet.load(directory: Fixtures.pissa("converted"), dims: weights.dims)
        XCTAssertEqual(set.config.r, 8)
        let model = LlamaModel(weights: weights)
        try set.attach(to: model)
        let expected = try SafeTensorsFile(path: Fixtures.pissa("converted") + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let got = try model.logits(TokenBatch(sequences: [ids]))
        XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-4)
    }

    func testPiSSAErrors() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        assertError(["PiSSA", "base model's weights"]) {
            try AdapterSet(config: LoRAConfig(r: 4, loraAlpha: 8), targets: [.q], layers: [0], dims: weights.dims,
                           initialization: .pissa)
        }
        // v_proj is [16, 32]: rank 20 has no 20 singular vectors.
        assertError(["v_proj", "rank 20", "min(in, out) = 16"]) { try pissaSet(weights, rank: 20) }
        assertError(["DoRA", "PiSSA"]) {
            try AdapterSet(config: LoRAConfig(r: 4, loraAlpha: 8, useDora: true), targets: [.q], layers: [0],
                           dims: weights.dims, initialization: .pissa, base: weights)
        }
        // An unconverted PiSSA adapter needs PEFT's residual: refused with the way out.
        let directory = try temporaryDirectory(self)
        try FileManager.default.copyItem(atPath: Fixtures.peft("lora-qv"), toPath: directory + "/raw")
        var config = try readJSON(directory + "/raw/adapter_config.json")
        config["init_lora_weights"] = "pissa"
        try writeJSON(config, to: directory + "/raw/adapter_config.json")
        assertError(["pissa", "path_initial_model_for_weight_conversion"]) {
            try AdapterSet.load(directory: directory + "/raw", dims: weights.dims)
        }
    }
}
