import Checkpoints
import Foundation
import InstructionTuning
import Tensors
import XCTest

/// Three full-batch AdamW steps from a PEFT adapter give the adapter PyTorch+PEFT gives
/// (fixtures by scripts/make_peft_fixtures.py: Tests/Fixtures/peft/train3, train3-wd and train3-loraplus).
final class FineTunerGoldenTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    func temporaryDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("lorakit-golden-\(UUID().uuidString)").path
    }

    func run(_ name: String, configure: (inout FineTuneOptions) -> Void) throws {
        Threads.set(2)
        let root = Self.fixtures.appendingPathComponent("peft/\(name)").path
        var options = FineTuneOptions(base: Self.fixtures.appendingPathComponent("models/gqa").path,
                                      data: root + "/data.json", out: temporaryDirectory())
        options.initAdapter = root + "/init"
        options.steps = 3
        options.lr = 1e-2
        options.lrSchedule = "constant"
        options.warmupSteps = 0
        options.dropout = 0
        options.valFraction = 0
        options.seed = 0
        configure(&options)
        var losses: [Double] = []
        let summary = try FineTuner(options: options).run { event in
            if case let .step(metrics) = event { losses.append(metrics.loss) }
        }
        XCTAssertEqual(summary.steps, 3)

        let reference = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: root + "/losses.json"))) as? [String: Any]
        let wantLosses = reference?["loss"] as? [Double] ?? []
        XCTAssertEqual(losses.count, wantLosses.count)
        for (got, want) in zip(losses, wantLosses) { XCTAssertEqual(got, want, accuracy: 1e-5, "\(name) loss") }

        let got = try SafeTensorsFile(path: options.out + "/adapter_model.safetensors")
        let want = try SafeTensorsFile(path: root + "/expected/adapter_model.safetensors")
        XCTAssertEqual(got.names, want.names)
        var worst: Float = 0
        for tensorName in want.names {
            let a = try got.tensor(tensorName), b = try want.tensor(tensorName)
            XCTAssertEqual(a.shape, b.shape, tensorName)
            for i in 0..<min(a.count, b.count) { worst = max(worst, abs(a[i] - b[i])) }
        }
        print("\(name): max |adapter − PEFT| after 3 steps = \(worst)")
        XCTAssertLessThan(worst, 2e-5, name)
    }

    func testThreeFullBatchStepsMatchPEFT() throws {
        try run("train3") { o in
            o.batchSize = 4
            o.weightDecay = 0
            o.maxGradNorm = 0
        }
    }

    func testGradientAccumulationClippingAndWeightDecayMatchPEFT() throws {
        try run("train3-wd") { o in
            o.batchSize = 2
            o.gradAccum = 2
            o.weightDecay = 0.1
            o.maxGradNorm = 1
            o.shuffle = false
        }
    }

    /// LoRA+ as PEFT's `create_loraplus_optimizer` (ratio 16, weight decay on both groups, clipping).
    func testLoRAPlusMatchesPEFT() throws {
        try run("train3-loraplus") { o in
            o.batchSize = 4
            o.weightDecay = 0.1
            o.maxGradNorm = 1
            o.loraplusLrRatio = 16
        }
    }
}
