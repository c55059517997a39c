import Checkpoints
import Foundation
import InstructionTuning
import MiniGPT
import Tensors
import XCTest

/// A stop asked for between steps (Ctrl-C or SIGTERM in the CLI): the fine-tuning run, the ablation and the
/// pretraining run save where they are and throw, and resuming ends with the bits of the run never interrupted.
final class InterruptionTests: XCTestCase {
    let gqa = FineTunerGoldenTests.fixtures.appendingPathComponent("models/gqa").path

    func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lorakit-interrupt-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Dropout, shuffling, accumulation, validation and a schedule: state a resume must restore. 6 steps, no
    /// periodic checkpoints, so whatever a stop keeps it saved itself.
    func options(_ dir: String, out: String) throws -> FineTuneOptions {
        try JSONSerialization.data(withJSONObject: FineTunerLearningTests.records(count: 16, seed: 5))
            .write(to: URL(fileURLWithPath: dir + "/data.json"))
        try #"{"prompt_input": "Q: {instruction} {input}\nA: ", "prompt_no_input": "Q: {instruction}\nA: "}"#
            .write(toFile: dir + "/template.json", atomically: true, encoding: .utf8)
        var o = FineTuneOptions(base: gqa, data: dir + "/data.json", out: out)
        o.template = dir + "/template.json"
        o.targets = "q,v,down"
        o.rank = 4
        o.dropout = 0.1
        o.steps = 6
        o.batchSize = 2
        o.gradAccum = 2
        o.lr = 1e-2
        o.warmupSteps = 2
        o.valFraction = 0.25
        o.evalEvery = 2
        o.seed = 3
        return o
    }

    /// A stop that answers yes from its `after`-th question on (the runs ask once before every step).
    final class StopAfter {
        var asked = 0
        let after: Int
        init(_ after: Int) { self.after = after }
        func callAsFunction() -> Bool {
            asked += 1
            return asked > after
        }
    }

    func assertSameFiles(_ a: String, _ b: String, _ names: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        for name in names {
            let x = try Data(contentsOf: URL(fileURLWithPath: a + "/" + name))
            let y = try Data(contentsOf: URL(fileURLWithPath: b + "/" + name))
            XCTAssertEqual(x, y, "\(name) differs from the uninterrupted run's", file: file, line: line)
        }
    }

    func metricsLosses(_ out: String) throws -> [Double] {
        try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double ?? .nan
        }
    }

    /// The uninterrupted run, and the options of the same run in another directory, to be stopped.
    func referenceAndStoppedRun() throws -> (reference: FineTuneOptions, stopped: FineTuneOptions) {
        Threads.set(2)
        let dir = try temporaryDirectory()
        let reference = try options(dir, out: dir + "/reference")
        _ = try FineTuner(options: reference).run()
        var stopped = reference
        stopped.out = dir + "/stopped"
        return (reference, stopped)
    }

    func testFineTuningStoppedBetweenStepsSavesAndResumesBitForBit() throws {
        let (reference, o) = try referenceAndStoppedRun()
        var events: [String] = []
        XCTAssertThrowsError(try FineTuner(options: o).run({ if case let .checkpoint(step, _) = $0 { events.append("checkpoint \(step)") } },
                                                           stopRequested: StopAfter(3).callAsFunction)) { error in
            guard let stop = error as? TrainingInterrupted else { return XCTFail("\(error)") }
            XCTAssertEqual(stop.step, 3)
            XCTAssertEqual(stop.totalSteps, 6)
            XCTAssertEqual(stop.checkpoint, o.out + "/checkpoint-3")
            XCTAssertEqual(stop.runDirectory, o.out)
        }
        XCTAssertEqual(events, ["checkpoint 3"])
        // The checkpoint is complete and its adapter is a PEFT adapter; the run's final adapter is not written.
        for name in ["adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "trainer_state.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: o.out + "/checkpoint-3/" + name), name)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: o.out + "/adapter_model.safetensors"))

        // Stopped again at once after resuming: nothing new to save, the same checkpoint is named.
        let again = try TrainerCheckpoint.latest(in: o.out)
        XCTAssertThrowsError(try FineTuner(options: again.options, resume: again).run(stopRequested: { true })) { error in
            XCTAssertEqual((error as? TrainingInterrupted)?.checkpoint, o.out + "/checkpoint-3")
        }

        let checkpoint = try TrainerCheckpoint.latest(in: o.out)
        XCTAssertEqual(checkpoint.step, 3)
        _ = try FineTuner(options: checkpoint.options, resume: checkpoint).run()
        try assertSameFiles(o.out, reference.out, ["adapter_model.safetensors", "adapter_config.json"])
        XCTAssertEqual(try metricsLosses(o.out).map(\.bitPattern), try metricsLosses(reference.out).map(\.bitPattern))
    }

    func testFineTuningStoppedBeforeItsFirstStepSavesNothingAndStartsOverOnResume() throws {
        let (reference, o) = try referenceAndStoppedRun()
        XCTAssertThrowsError(try FineTuner(options: o).run(stopRequested: { true })) { error in
            guard let stop = error as? TrainingInterrupted else { return XCTFail("\(error)") }
            XCTAssertEqual(stop.step, 0)
            XCTAssertNil(stop.checkpoint)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: o.out).sorted(), ["metrics.jsonl", "run_options.json"])
        let start = try TrainerCheckpoint.latest(in: o.out)
        XCTAssertEqual(start.step, 0)
        _ = try FineTuner(options: start.options, resume: start).run()
        try assertSameFiles(o.out, reference.out, ["adapter_model.safetensors", "adapter_config.json"])
    }

    func testAblationStoppedInsideAndBetweenRunsResumesToTheSameResults() throws {
        Threads.set(2)
        let dir = try temporaryDirectory()
        var training = try options(dir, out: dir + "/unused")
        training.steps = 3
        let dims = ModelDimensions(try LlamaWeights.load(directory: gqa).config)
        let plan = try AblationPlan(sets: ["q", "v", "down"], budget: AblationPlan.parametersPerRank([.q], dims: dims) * 4,
                                    dims: dims)
        func runner(_ out: String) throws -> AblationRunner {
            var runner = try AblationRunner(plan: plan, training: training, seeds: 1, out: out)
            runner.evalLimit = 2
            return runner
        }
        let runNames = plan.entries.map { "\($0.name)-r\($0.rank)-s\(training.seed)" }
        let reference = try runner(dir + "/reference").run()
        XCTAssertEqual(reference.count, 3)

        // Stopped before step 2 of the second run. The runner asks before each run, the run before each step:
        // 4 questions for run one, then run two's start, step 1, step 2 (the seventh, which says stop).
        let out = dir + "/stopped"
        XCTAssertThrowsError(try runner(out).run(stopRequested: StopAfter(6).callAsFunction)) { error in
            guard let stop = error as? AblationRunner.Interrupted else { return XCTFail("\(error)") }
            XCTAssertEqual(stop.finished, 1)
            XCTAssertEqual(stop.total, 3)
            XCTAssertEqual(stop.run?.step, 1)
            XCTAssertEqual(stop.run?.checkpoint, out + "/runs/" + runNames[1] + "/checkpoint-1")
        }
        // Resumed (run one read back without a question), and stopped again between the second and the third run:
        // run two's start, steps 2 and 3, then run three's start.
        XCTAssertThrowsError(try AblationRunner.resume(directory: out).run(stopRequested: StopAfter(3).callAsFunction)) { error in
            guard let stop = error as? AblationRunner.Interrupted else { return XCTFail("\(error)") }
            XCTAssertEqual(stop.finished, 2)
            XCTAssertNil(stop.run)
        }
        var events: [String] = []
        let resumed = try AblationRunner.resume(directory: out + "/").run { event in
            if case let .starting(index, _, entry, _) = event { events.append("\(index) \(entry.name)") }
        }
        XCTAssertEqual(events, ["1 q", "2 v", "3 down"])
        XCTAssertEqual(resumed.map(\.targets), reference.map(\.targets))
        XCTAssertEqual(resumed.map(\.trainLoss), reference.map(\.trainLoss))
        XCTAssertEqual(resumed.map(\.valLoss), reference.map(\.valLoss))
        XCTAssertEqual(resumed.map(\.exactMatch), reference.map(\.exactMatch))
        XCTAssertEqual(resumed.map(\.trainableParams), reference.map(\.trainableParams))
        for run in runNames {
            try assertSameFiles(out + "/runs/" + run, dir + "/reference/runs/" + run, ["adapter_model.safetensors"])
        }
        XCTAssertEqual(try String(contentsOfFile: out + "/results.csv", encoding: .utf8).split(separator: "\n").count, 4)

        // Killed while evaluating its second run (training done, no result.json): resumed, that run is evaluated
        // again and reports its training loss, which the final checkpoint keeps.
        try FileManager.default.removeItem(atPath: out + "/runs/" + runNames[1] + "/" + "result.json")
        let again = try AblationRunner.resume(directory: out).run()
        XCTAssertEqual(again.map(\.trainLoss), reference.map(\.trainLoss))
        XCTAssertEqual(again.map(\.exactMatch), reference.map(\.exactMatch))

        // What is not an ablation is named.
        XCTAssertThrowsError(try AblationRunner.resume(directory: dir)) { XCTAssertTrue("\($0)".contains("ablation.json"), "\($0)") }
    }
}
