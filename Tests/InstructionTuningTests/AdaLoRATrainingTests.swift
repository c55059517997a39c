import Checkpoints
import Foundation
import InstructionTuning
import Targeting
import Tensors
import XCTest

/// `lora finetune --adalora` against PEFT's AdaLoRA loop (fixture Tests/Fixtures/adalora/train4 by
/// scripts/make_adalora_fixtures.py: four steps through every phase of the budget schedule), and exact resume.
final class AdaLoRATrainingTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    func temporaryDirectory() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lorakit-adalora-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func options(out: String) -> FineTuneOptions {
        let root = Self.fixtures.appendingPathComponent("adalora/train4").path
        var options = FineTuneOptions(base: Self.fixtures.appendingPathComponent("models/gqa").path,
                                      data: root + "/data.json", out: out)
        options.initAdapter = root + "/init"
        options.adalora = AdaLoRASchedule(targetRank: 2, tinit: 0, tfinal: 2, deltaT: 1, beta1: 0.85, beta2: 0.85,
                                          orthRegWeight: 0.5)
        options.steps = 4
        options.batchSize = 4
        options.lr = 1e-2
        options.lrSchedule = "constant"
        options.warmupSteps = 0
        options.weightDecay = 0
        options.maxGradNorm = 1
        options.dropout = 0
        options.seed = 0
        return options
    }

    /// The run matches PEFT; then a copy of it cut back to its step-2 checkpoint and resumed ends with the same
    /// adapter and state, bit for bit (parameters, AdamW moments and the allocator's averages all come back).
    func testFourStepsMatchPEFTsAdaLoRALoopAndResumeExactly() throws {
        Threads.set(2)
        let root = Self.fixtures.appendingPathComponent("adalora/train4").path
        var options = options(out: temporaryDirectory())
        options.saveEvery = 2
        options.keep = 5
        var losses: [Double] = []
        _ = try FineTuner(options: options).run { event in
            if case let .step(metrics) = event { losses.append(metrics.loss) }
        }
        let reference = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: root + "/losses.json"))) as? [String: Any]
        let wantLosses = reference?["loss"] as? [Double] ?? []
        XCTAssertEqual(losses.count, 4)
        for (got, want) in zip(losses, wantLosses) { XCTAssertEqual(got, want, accuracy: 2e-5, "loss with the regulariser") }

        // The same rank pattern, and the same (pruned) tensors.
        let gotConfig = try AdaLoRAConfig.load(path: options.out + "/adapter_config.json")
        let wantConfig = try AdaLoRAConfig.load(path: root + "/expected/adapter_config.json")
        XCTAssertEqual(gotConfig.rankPattern, wantConfig.rankPattern)
        XCTAssertEqual(gotConfig.totalStep, 4)
        let got = try SafeTensorsFile(path: options.out + "/adapter_model.safetensors")
        let want = try SafeTensorsFile(path: root + "/expected/adapter_model.safetensors")
        XCTAssertEqual(got.names, want.names)
        var worst: Float = 0
        for name in want.names {
            let a = try got.tensor(name), b = try want.tensor(name)
            XCTAssertEqual(a.shape, b.shape, name)
            for i in 0..<min(a.count, b.count) { worst = max(worst, abs(a[i] - b[i])) }
        }
        print("adalora train4: max |adapter − PEFT| after 4 steps = \(worst)")
        XCTAssertLessThan(worst, 5e-5)

        // Resume: a copy of the run with only the step-2 checkpoint left.
        let fm = FileManager.default
        let cut = temporaryDirectory()
        try fm.copyItem(atPath: options.out, toPath: cut)
        for name in ["checkpoint-4", "adapter_model.safetensors", "adapter_config.json"] {
            try fm.removeItem(atPath: cut + "/" + name)
        }
        let checkpoint = try TrainerCheckpoint.latest(in: cut)
        XCTAssertEqual(checkpoint.step, 2)
        let state = try SafeTensorsFile(path: cut + "/checkpoint-2/adalora_state.safetensors")
        XCTAssertEqual(Set(state.names), ["parameters", "exp_avg_ipt", "exp_avg_unc"])
        _ = try FineTuner(options: checkpoint.options, resume: checkpoint).run()
        for file in ["adapter_model.safetensors", "adapter_config.json", "checkpoint-4/adalora_state.safetensors",
                     "checkpoint-4/optimizer.safetensors"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: options.out + "/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: cut + "/" + file))
            XCTAssertEqual(a, b, file)
        }
    }

    func testBadAdaLoRARunsAreClearErrors() throws {
        var o = options(out: temporaryDirectory())
        o.initAdapter = nil
        o.rank = 4
        o.adalora?.targetRank = 6
        XCTAssertThrowsError(try FineTuner(options: o)) { error in
            XCTAssertTrue((error as? LoRAKitError)?.message.contains("--target-rank 6 must be below --rank 4") ?? false, "\(error)")
        }
        o.adalora?.targetRank = 2
        o.rslora = true
        XCTAssertThrowsError(try FineTuner(options: o)) { error in
            XCTAssertTrue((error as? LoRAKitError)?.message.contains("--rslora") ?? false, "\(error)")
        }
        // An AdaLoRA --init-adapter without --adalora, and --adalora over a LoRA adapter.
        var plain = options(out: temporaryDirectory())
        plain.adalora = nil
        XCTAssertThrowsError(try FineTuner(options: plain)) { error in
            XCTAssertTrue((error as? LoRAKitError)?.message.contains("continue it with --adalora") ?? false, "\(error)")
        }
        var overLoRA = options(out: temporaryDirectory())
        overLoRA.initAdapter = Self.fixtures.appendingPathComponent("peft/train3/init").path
        XCTAssertThrowsError(try FineTuner(options: overLoRA)) { error in
            XCTAssertTrue((error as? LoRAKitError)?.message.contains("not an AdaLoRA adapter") ?? false, "\(error)")
        }
    }
}
