import Checkpoints
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A `lora` process started in the background, to be killed at a chosen moment.
final class LoraBackgroundRun {
    let process = Process()
    /// Where its standard error goes, when asked for.
    let stderrPath: String?

    init(_ arguments: [String], keepStderr: Bool = false) throws {
        process.executableURL = Lora.executable
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        if keepStderr {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("lora-bg-\(UUID().uuidString).err").path
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            stderrPath = path
        } else {
            process.standardError = FileHandle.nullDevice
            stderrPath = nil
        }
        try process.run()
    }

    deinit {
        if let stderrPath { try? FileManager.default.removeItem(atPath: stderrPath) }
    }

    /// Sends `number` (SIGINT as Ctrl-C does, SIGTERM as `kill` and service managers do).
    func signal(_ number: Int32) {
        Glibc.kill(process.processIdentifier, number)
    }

    /// What it has printed on standard error so far (with `keepStderr`).
    var stderrText: String { stderrPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "" }

    /// Waits for the process to end.
    func finish() -> LoraRun {
        process.waitUntilExit()
        return LoraRun(status: process.terminationStatus, stdout: "", stderr: stderrText,
                       crashed: process.terminationReason == .uncaughtSignal)
    }

    /// Polls `condition` every few milliseconds; true once it holds, false if the process ended first.
    func wait(until condition: () -> Bool, timeout: TimeInterval = 300) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            if !process.isRunning { return condition() }
            usleep(2_000)
        }
        return false
    }

    /// SIGKILL, as the kernel's OOM killer or a dead battery would; returns true if the signal killed it.
    func kill() -> Bool {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL
    }
}

/// Crash safety of `lora finetune`: a run killed with SIGKILL at any moment and resumed with `--resume DIR`
/// ends with the adapter of the run that was never interrupted, bit for bit; NaN and failed saves stop the run
/// with the last checkpoint intact.
final class ResumeTests: XCTestCase {
    let gqa = Lora.fixture("models/gqa")
    /// Shared by the tests of this class: the data, the template and the uninterrupted reference run.
    static var shared: String?
    var directory = ""
    var data: String { Self.shared.map { $0 + "/data.json" } ?? "" }
    var template: String { Self.shared.map { $0 + "/template.json" } ?? "" }

    override func setUpWithError() throws {
        if Self.shared == nil {
            let shared = try Lora.temporaryDirectory()
            // Short prompts keep the run to a few seconds in a debug build.
            let records = (0..<12).map { i -> [String: String] in
                ["instruction": "say \(i)", "input": i % 3 == 0 ? "" : "x\(i)", "output": "\(i) \(i * 7)"]
            }
            try JSONSerialization.data(withJSONObject: records).write(to: URL(fileURLWithPath: shared + "/data.json"))
            try Data(#"{"prompt_input": "{instruction} {input}:", "prompt_no_input": "{instruction}:"}"#.utf8)
                .write(to: URL(fileURLWithPath: shared + "/template.json"))
            Self.shared = shared
        }
        directory = try Lora.temporaryDirectory()
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    override class func tearDown() {
        if let shared { try? FileManager.default.removeItem(atPath: shared) }
        shared = nil
    }

    /// Dropout, shuffling over three epochs, gradient accumulation, a validation split, a cosine schedule with
    /// warmup, weight decay: every piece of state a resume has to restore. 9 steps, a checkpoint after each.
    func arguments(out: String) -> [String] {
        ["finetune", "--base", gqa, "--data", data, "--template", template, "--out", out,
         "--targets", "all", "--rank", "4", "--dropout", "0.1", "--epochs", "3", "--batch-size", "2", "--grad-accum", "2",
         "--lr", "1e-2", "--warmup-steps", "2", "--weight-decay", "0.01", "--val-fraction", "0.2", "--eval-every", "3",
         "--save-every", "1", "--keep", "2", "--seed", "7", "--threads", "1"]
    }

    let totalSteps = 9

    func resume(_ out: String, threads: String = "1") throws -> LoraRun {
        try Lora.run(["finetune", "--resume", out, "--threads", threads])
    }

    func metricsLines(_ out: String) -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    func checkpoints(_ out: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).filter { $0.hasPrefix("checkpoint-") }.sorted()
    }

    /// The reference: the same run, never interrupted (made once for the class; tests copy it, never change it).
    func referenceRun() throws -> String {
        let out = (Self.shared ?? directory) + "/reference"
        if FileManager.default.fileExists(atPath: out + "/adapter_model.safetensors") { return out }
        let run = try Lora.run(arguments(out: out))
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(metricsLines(out).count, totalSteps)
        return out
    }

    /// The adapter files and every step's loss are those of the reference, byte for byte and bit for bit.
    func assertSameRun(_ out: String, as reference: String, file: StaticString = #filePath, line: UInt = #line) throws {
        for name in ["adapter_model.safetensors", "adapter_config.json"] {
            let got = try Data(contentsOf: URL(fileURLWithPath: out + "/" + name))
            let want = try Data(contentsOf: URL(fileURLWithPath: reference + "/" + name))
            XCTAssertEqual(got, want, "\(name) differs from the uninterrupted run's", file: file, line: line)
        }
        let got = metricsLines(out), want = metricsLines(reference)
        XCTAssertEqual(got.map { $0["step"] as? Int }, want.map { $0["step"] as? Int }, "metrics.jsonl steps", file: file, line: line)
        XCTAssertEqual(got.map { $0["loss"] as? Double }, want.map { $0["loss"] as? Double }, "losses", file: file, line: line)
        XCTAssertEqual(got.map { $0["val_loss"] as? Double }, want.map { $0["val_loss"] as? Double }, file: file, line: line)
        // Nothing a killed run wrote half is left behind.
        let hidden = ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).filter { $0.hasPrefix(".") }
        XCTAssertEqual(hidden, [], "debris left in the run directory", file: file, line: line)
    }

    func testRunKilledAtSeveralPointsResumesToTheSameAdapterBitForBit() throws {
        let reference = try referenceRun()
        let out = directory + "/killed"
        // Each kill point is a condition on the run directory; the process is killed as soon as it holds, so
        // the kill lands wherever the run happens to be then (mid-step, mid-save, mid-prune).
        let killPoints: [(String, () -> Bool)] = [
            ("the run directory exists, no step done", { FileManager.default.fileExists(atPath: out + "/run_options.json") }),
            ("after step 2's metrics line", { self.metricsLines(out).count >= 2 }),
            ("when checkpoint-4 appears", { FileManager.default.fileExists(atPath: out + "/checkpoint-4") }),
            ("after step 7's metrics line", { self.metricsLines(out).count >= 7 }),
        ]
        var arguments = self.arguments(out: out)
        for (label, condition) in killPoints {
            let run = try LoraBackgroundRun(arguments)
            XCTAssertTrue(run.wait(until: condition), "the run ended before \(label)")
            XCTAssertTrue(run.kill(), "the run was not killed \(label) (it had finished)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/adapter_model.safetensors"), label)
            // Every visible checkpoint is complete, whatever the kill interrupted.
            for name in checkpoints(out) {
                XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + name + "/trainer_state.json"), "\(name) after a kill \(label)")
            }
            arguments = ["finetune", "--resume", out, "--threads", "1"]
        }
        let finished = try resume(out)
        XCTAssertEqual(finished.status, 0, finished.stderr)
        try assertSameRun(out, as: reference)
        XCTAssertEqual(checkpoints(out), ["checkpoint-8", "checkpoint-9"])
    }

    /// `--grad-checkpoint` recomputes activations instead of keeping them: the run (dropout, every projection
    /// adapted, accumulation, validation) ends with the same adapter and losses, and a run killed with it resumes
    /// without it (and the other way round) to the same bits.
    func testGradientCheckpointingGivesTheSameRunAndMixesWithResume() throws {
        let reference = try referenceRun()
        let checkpointed = directory + "/checkpointed"
        let run = try Lora.run(arguments(out: checkpointed) + ["--grad-checkpoint"])
        XCTAssertEqual(run.status, 0, run.stderr)
        try assertSameRun(checkpointed, as: reference)

        let mixed = directory + "/mixed"
        let killed = try LoraBackgroundRun(arguments(out: mixed) + ["--grad-checkpoint"])
        XCTAssertTrue(killed.wait(until: { self.metricsLines(mixed).count >= 4 }), "the run ended first")
        XCTAssertTrue(killed.kill(), "the run had finished")
        let again = try LoraBackgroundRun(["finetune", "--resume", mixed, "--threads", "1"])
        XCTAssertTrue(again.wait(until: { self.metricsLines(mixed).count >= 7 }), "the resumed run ended first")
        XCTAssertTrue(again.kill(), "the resumed run had finished")
        let finished = try Lora.run(["finetune", "--resume", mixed, "--threads", "1", "--grad-checkpoint"])
        XCTAssertEqual(finished.status, 0, finished.stderr)
        try assertSameRun(mixed, as: reference)
    }

    /// Ctrl-C and SIGTERM: the run finishes its step, saves it (there are no periodic checkpoints here), says how
    /// to continue and exits with 128 + the signal; a second Ctrl-C ends it at once. Resumed after each, the run
    /// ends with the uninterrupted run's bits. (docs/bad-inputs.md R09)
    func testCtrlCAndSIGTERMSaveTheStepAndResumeBitForBit() throws {
        let reference = try referenceRun()
        let out = directory + "/signalled"
        var arguments = self.arguments(out: out)
        if let i = arguments.firstIndex(of: "--save-every") { arguments[i + 1] = "0" }
        let resumeArguments = ["finetune", "--resume", out, "--threads", "1"]

        for (number, afterSteps) in [(SIGINT, 2), (SIGTERM, 5)] {
            let run = try LoraBackgroundRun(arguments, keepStderr: true)
            XCTAssertTrue(run.wait(until: { self.metricsLines(out).count >= afterSteps }), "the run ended first")
            run.signal(number)
            let result = run.finish()
            XCTAssertFalse(result.crashed, "signal \(number) killed the run instead of stopping it: \(result.stderr)")
            XCTAssertEqual(result.status, 128 + number, result.stderr)
            let step = metricsLines(out).count
            XCTAssertTrue(result.stderr.contains("interrupted after step \(step) of \(totalSteps): saved \(out)/checkpoint-\(step)"),
                          result.stderr)
            XCTAssertTrue(result.stderr.contains("continue with: lora finetune --resume \(out)"), result.stderr)
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/checkpoint-\(step)/trainer_state.json"))
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/adapter_model.safetensors"))
            arguments = resumeArguments
        }

        // A second Ctrl-C, once the first has been taken, is not caught: the process dies of it. (Should the run
        // save and exit between the two signals — a step here takes milliseconds — the attempt is repeated.)
        var diedOfSecondSignal = false
        for _ in 0..<5 where !diedOfSecondSignal {
            let impatient = try LoraBackgroundRun(resumeArguments, keepStderr: true)
            let before = metricsLines(out).count
            XCTAssertTrue(impatient.wait(until: { self.metricsLines(out).count > before }), "the run ended first")
            impatient.signal(SIGINT)
            _ = impatient.wait(until: { impatient.stderrText.contains("lora: stopping after this step") })
            impatient.signal(SIGINT)
            let result = impatient.finish()
            if result.crashed {
                XCTAssertEqual(result.status, SIGINT, result.stderr)
                diedOfSecondSignal = true
            } else {
                XCTAssertEqual(result.status, 128 + SIGINT, result.stderr)
            }
        }
        XCTAssertTrue(diedOfSecondSignal, "a second Ctrl-C never ended the process")

        let finished = try resume(out)
        XCTAssertEqual(finished.status, 0, finished.stderr)
        try assertSameRun(out, as: reference)
    }

    /// `lora pretrain` stopped with Ctrl-C saves its step and says how to go on; resumed, it ends with the model of
    /// the run never interrupted, bit for bit.
    func testPretrainStoppedWithCtrlCResumesBitForBit() throws {
        let corpus = directory + "/corpus.txt"
        let words = ["the", "cat", "sees", "a", "dog", "red", "house", "runs", "small", "tree"]
        try (0..<300).map { i in (0..<(5 + i % 7)).map { words[($0 * 7 + i) % words.count] }.joined(separator: " ") + "." }
            .joined(separator: "\n\n").write(toFile: corpus, atomically: true, encoding: .utf8)
        func arguments(_ out: String) -> [String] {
            ["pretrain", "--corpus", corpus, "--tokenizer", Lora.fixture("tokenizer/unigram.model"), "--out", out,
             "--dim", "32", "--layers", "2", "--heads", "4", "--seq-len", "32", "--batch-size", "4", "--steps", "40",
             "--save-every", "0", "--seed", "3", "--threads", "1"]
        }
        let reference = directory + "/pretrain-reference"
        let whole = try Lora.run(arguments(reference))
        XCTAssertEqual(whole.status, 0, whole.stderr)

        let out = directory + "/pretrain"
        let run = try LoraBackgroundRun(arguments(out), keepStderr: true)
        XCTAssertTrue(run.wait(until: { self.metricsLines(out).count >= 3 }), "the run ended first")
        run.signal(SIGINT)
        let stopped = run.finish()
        XCTAssertEqual(stopped.status, 128 + SIGINT, stopped.stderr)
        let step = metricsLines(out).count
        XCTAssertTrue(stopped.stderr.contains("interrupted after step \(step) of 40: saved \(out)/checkpoint-\(step)"), stopped.stderr)
        XCTAssertTrue(stopped.stderr.contains("continue with: lora pretrain --resume \(out)"), stopped.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/model.safetensors"))

        let resumed = try Lora.run(["pretrain", "--resume", out, "--threads", "1"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try SafeTensorsFile(path: reference + "/model.safetensors")
        let b = try SafeTensorsFile(path: out + "/model.safetensors")
        XCTAssertEqual(a.names, b.names)
        for name in a.names {
            XCTAssertEqual(try a.tensor(name).array.map(\.bitPattern), try b.tensor(name).array.map(\.bitPattern), name)
        }
    }

    /// `lora ablate` stopped with Ctrl-C in its second run keeps the finished run and the stopped one's step;
    /// `--resume DIR` continues it to the results of the ablation never interrupted. (docs/bad-inputs.md R10)
    func testAblationStoppedWithCtrlCResumesToTheSameResults() throws {
        func arguments(_ out: String) -> [String] {
            ["ablate", "--base", gqa, "--data", data, "--template", template, "--out", out, "--targets", "q", "v", "o", "--ranks", "4",
             "--steps", "4", "--batch-size", "2", "--val-fraction", "0.25", "--eval-limit", "2", "--seed", "7", "--threads", "1"]
        }
        let reference = directory + "/ablation-reference"
        let whole = try Lora.run(arguments(reference))
        XCTAssertEqual(whole.status, 0, whole.stderr)

        let out = directory + "/ablation"
        let run = try LoraBackgroundRun(arguments(out), keepStderr: true)
        let secondRun = out + "/runs/v-r4-s7/metrics.jsonl"
        XCTAssertTrue(run.wait(until: { FileManager.default.fileExists(atPath: secondRun) }), "the ablation ended first")
        run.signal(SIGINT)
        let stopped = run.finish()
        XCTAssertEqual(stopped.status, 128 + SIGINT, stopped.stderr)
        XCTAssertTrue(stopped.stderr.contains("of 3 runs finished (\(out)/results.csv)"), stopped.stderr)
        XCTAssertTrue(stopped.stderr.contains("continue with: lora ablate --resume \(out)"), stopped.stderr)

        // Started again as new, it refuses and points at --resume; --resume of what is no ablation is named.
        assertCleanFailure(try Lora.run(arguments(out)), mentions: "--resume \(out)")
        assertCleanFailure(try Lora.run(["ablate", "--resume", directory]), mentions: "ablation.json")

        let resumed = try Lora.run(["ablate", "--resume", out, "--threads", "1"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        // Every column but the speed and memory of the runs.
        func results(_ dir: String) throws -> [String] {
            try String(contentsOfFile: dir + "/results.csv", encoding: .utf8).split(separator: "\n")
                .map { $0.split(separator: ",").prefix(7).joined(separator: ",") }
        }
        XCTAssertEqual(try results(out), try results(reference))
        XCTAssertEqual(try results(out).count, 4)
    }

    func testKillsAfterTheFinalCheckpointAndWhilePruningLoseNothing() throws {
        let reference = try referenceRun()
        let fm = FileManager.default

        // Killed between the final checkpoint and the final adapter: the resume only writes the adapter.
        let late = directory + "/late"
        try fm.copyItem(atPath: reference, toPath: late)
        try fm.removeItem(atPath: late + "/adapter_model.safetensors")
        try fm.removeItem(atPath: late + "/adapter_config.json")
        let stamp = try fm.attributesOfItem(atPath: late + "/checkpoint-9/trainer_state.json")[.modificationDate] as? Date
        let run = try resume(late)
        XCTAssertEqual(run.status, 0, run.stderr)
        try assertSameRun(late, as: reference)
        XCTAssertEqual(try fm.attributesOfItem(atPath: late + "/checkpoint-9/trainer_state.json")[.modificationDate] as? Date,
                       stamp, "the final checkpoint was rewritten")

        // Killed mid-save and mid-prune: a temporary checkpoint directory, a half-deleted hidden one, a stray
        // temporary file, and a visible checkpoint missing its state (damaged by hand): all passed over.
        let messy = directory + "/messy"
        try fm.copyItem(atPath: reference, toPath: messy)
        for name in ["adapter_model.safetensors", "adapter_config.json", "checkpoint-9"] {
            try fm.removeItem(atPath: messy + "/" + name)
        }
        try fm.copyItem(atPath: messy + "/checkpoint-8", toPath: messy + "/.checkpoint-9.tmp-123-abc")
        try fm.removeItem(atPath: messy + "/.checkpoint-9.tmp-123-abc/trainer_state.json")
        try fm.copyItem(atPath: messy + "/checkpoint-8", toPath: messy + "/.checkpoint-7.deleting-99")
        try Data("{\"step\": 9, \"lo".utf8).write(to: URL(fileURLWithPath: messy + "/.metrics.jsonl.tmp-5-77"))
        try fm.copyItem(atPath: messy + "/checkpoint-8", toPath: messy + "/checkpoint-12")
        try fm.removeItem(atPath: messy + "/checkpoint-12/optimizer.safetensors")
        let cleaned = try resume(messy)
        XCTAssertEqual(cleaned.status, 0, cleaned.stderr)
        XCTAssertTrue(cleaned.stderr.contains("checkpoint-8"), cleaned.stderr)
        try fm.removeItem(atPath: messy + "/checkpoint-12")
        try assertSameRun(messy, as: reference)

        // A finished run resumes to itself; another thread count is warned about.
        let finished = directory + "/finished"
        try fm.copyItem(atPath: reference, toPath: finished)
        let again = try resume(finished, threads: "2")
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stderr.contains("1 threads") && again.stderr.contains("bit-identical"), again.stderr)
        try assertSameRun(finished, as: reference)
    }

    func testNonFiniteLossStopsAtTheStepAndKeepsTheLastCheckpoint() throws {
        let out = directory + "/nan"
        // A learning rate of 1e30 puts ±1e30 into lora_B after step 1; step 2's logits overflow.
        let run = try Lora.run(["finetune", "--base", gqa, "--data", data, "--template", template, "--out", out,
                                "--targets", "all", "--rank", "4", "--steps", "4", "--batch-size", "2",
                                "--save-every", "1", "--lr", "1e30", "--threads", "1"])
        assertCleanFailure(run, mentions: "step 2: the loss or the gradients are not finite")
        XCTAssertTrue(run.stderr.contains("checkpoint-1"), run.stderr)
        XCTAssertEqual(checkpoints(out), ["checkpoint-1"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/adapter_model.safetensors"))
        // The checkpoint left is a good one: finite and loadable.
        let adapter = try SafeTensorsFile(path: out + "/checkpoint-1/adapter_model.safetensors")
        for name in adapter.names {
            XCTAssertTrue(try adapter.tensor(name).array.allSatisfy(\.isFinite), name)
        }
    }

    func testFailedSaveIsAClearErrorAndKeepsThePreviousCheckpoint() throws {
        let reference = try referenceRun()
        let out = directory + "/full"
        let first = try LoraBackgroundRun(arguments(out: out))
        XCTAssertTrue(first.wait(until: { FileManager.default.fileExists(atPath: out + "/checkpoint-3") }))
        XCTAssertTrue(first.kill())
        let newest = checkpoints(out).last ?? "none"
        let saved = try Data(contentsOf: URL(fileURLWithPath: out + "/" + newest + "/optimizer.safetensors"))

        // RLIMIT_FSIZE of 40 × 512 bytes: the adapter (15 KB) fits, the optimizer moments (30 KB) do not — the
        // write fails as on a full disk (EFBIG here, ENOSPC there; the same code path). SIGXFSZ is ignored so the
        // write returns the error instead of killing the process.
        let full = try runUnderShell("trap '' XFSZ; ulimit -f 40; exec \"$0\" \"$@\"",
                                     ["finetune", "--resume", out, "--threads", "1"])
        assertCleanFailure(full, mentions: "cannot save the checkpoint, the previous ones are intact")
        XCTAssertTrue(full.stderr.contains("optimizer.safetensors: could not write: File too large"), full.stderr)
        XCTAssertFalse(full.stderr.contains(".tmp-"), "the message names a hidden temporary: \(full.stderr)")
        // The previous checkpoint is intact and nothing half-written is visible.
        XCTAssertTrue(checkpoints(out).contains(newest))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/" + newest + "/optimizer.safetensors")), saved)
        for name in checkpoints(out) {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + name + "/optimizer.safetensors"), name)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/adapter_model.safetensors"))
        // With room again, the run resumes and ends as if nothing had happened.
        let finished = try resume(out)
        XCTAssertEqual(finished.status, 0, finished.stderr)
        try assertSameRun(out, as: reference)
    }

    /// Runs `lora arguments` through `/bin/sh -c script` (the script ends with `exec "$0" "$@"`).
    func runUnderShell(_ script: String, _ arguments: [String]) throws -> LoraRun {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script, Lora.executable.path] + arguments
        let errPath = directory + "/shell-\(UUID().uuidString).err"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try process.run()
        process.waitUntilExit()
        let stderr = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errPath))) ?? Data(), as: UTF8.self)
        try? FileManager.default.removeItem(atPath: errPath)
        return LoraRun(status: process.terminationStatus, stdout: "", stderr: stderr,
                       crashed: process.terminationReason == .uncaughtSignal)
    }

    func testResumeRefusesWhatIsNotARun() throws {
        assertCleanFailure(try resume(directory + "/missing"), mentions: "no such run directory")
        assertCleanFailure(try resume(data), mentions: "is a file")
        let empty = directory + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        assertCleanFailure(try resume(empty), mentions: "not the --out directory of a finetune run")
        let broken = empty + "/checkpoint-3"
        try FileManager.default.createDirectory(atPath: broken, withIntermediateDirectories: true)
        try Data("{\"options\": 5}".utf8).write(to: URL(fileURLWithPath: broken + "/trainer_state.json"))
        assertCleanFailure(try resume(broken), mentions: "trainer_state.json")
    }
}
