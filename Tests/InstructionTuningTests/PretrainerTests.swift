import Checkpoints
import Foundation
import InstructionTuning
import Tensors
import XCTest

/// `lora pretrain`'s trainer: the loss falls, a resumed run ends with the same bits, bad corpora are refused.
final class PretrainerTests: XCTestCase {
    let tokenizer = FineTunerGoldenTests.fixtures.appendingPathComponent("tokenizer/unigram.model").path

    func makeCorpus(_ dir: String) throws -> String {
        var rng = RandomGenerator(seed: 5)
        let words = ["the", "a", "cat", "dog", "sees", "runs", "big", "small", "red", "house", "tree", "sun"]
        var paragraphs: [String] = []
        for _ in 0..<400 {
            let n = 4 + Int(rng.next() % 8)
            paragraphs.append((0..<n).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ") + ".")
        }
        let path = dir + "/corpus.txt"
        try paragraphs.joined(separator: "\n\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func options(_ dir: String, out: String) throws -> PretrainOptions {
        var o = PretrainOptions(corpus: try makeCorpus(dir), tokenizer: tokenizer, out: out)
        o.dim = 32; o.layers = 2; o.heads = 4; o.kvHeads = 2; o.context = 64
        o.seqLen = 32; o.batchSize = 4; o.steps = 30; o.lr = 3e-3; o.warmupSteps = 5
        o.evalEvery = 10; o.saveEvery = 10; o.keep = 5; o.valFraction = 0.05
        return o
    }

    func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lorakit-pretrain-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func testLossFallsAndResumeIsBitExact() throws {
        Threads.set(2)
        let dir = try temporaryDirectory()
        let o = try options(dir, out: dir + "/a")
        let trainer = try Pretrainer(options: o)
        let initial = try trainer.validationLoss()
        var validation: [Double] = []
        let summary = try trainer.run { if case let .validation(_, loss) = $0 { validation.append(loss) } }
        XCTAssertEqual(summary.steps, 30)
        XCTAssertLessThan(validation.last ?? .infinity, initial - 1, "validation \(initial) → \(validation)")
        for file in ["config.json", "model.safetensors", "tokenizer.model", "metrics.jsonl"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: o.out + "/" + file), file)
        }

        // Resume the same run from its step-10 checkpoint into another directory: the same final bits.
        var resumed = o
        resumed.out = dir + "/b"
        _ = try Pretrainer(options: resumed, resumeFrom: o.out + "/checkpoint-10").run()
        try assertSameModel(o.out, resumed.out)
    }

    /// The two model directories hold the same tensors, bit for bit.
    func assertSameModel(_ first: String, _ second: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let a = try SafeTensorsFile(path: first + "/model.safetensors")
        let b = try SafeTensorsFile(path: second + "/model.safetensors")
        XCTAssertEqual(a.names, b.names, file: file, line: line)
        for name in a.names {
            XCTAssertEqual(try a.tensor(name).array.map(\.bitPattern), try b.tensor(name).array.map(\.bitPattern), name,
                           file: file, line: line)
        }
    }

    /// A run of `steps` steps trained to its end in `dir/a` (two threads), and the temporary directory.
    func finishedRun(steps: Int) throws -> (dir: String, options: PretrainOptions) {
        Threads.set(2)
        let dir = try temporaryDirectory()
        var o = try options(dir, out: dir + "/a")
        o.steps = steps
        _ = try Pretrainer(options: o).run()
        return (dir, o)
    }

    /// A stop asked for between steps (Ctrl-C in the CLI) saves the step it is at; resuming in place ends with the
    /// bits of the uninterrupted run.
    func testStoppedRunSavesItsStepAndResumesBitForBit() throws {
        let (dir, o) = try finishedRun(steps: 9)
        var stopped = o
        stopped.out = dir + "/b"
        var asked = 0
        XCTAssertThrowsError(try Pretrainer(options: stopped).run(stopRequested: { asked += 1; return asked > 7 })) { error in
            guard let stop = error as? TrainingInterrupted else { return XCTFail("\(error)") }
            XCTAssertEqual(stop.step, 7)
            XCTAssertEqual(stop.checkpoint, stopped.out + "/checkpoint-7")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: stopped.out + "/model.safetensors"))
        let (saved, path) = try Pretrainer.latestCheckpoint(in: stopped.out)
        XCTAssertEqual(path, stopped.out + "/checkpoint-7")
        _ = try Pretrainer(options: saved, resumeFrom: path).run()
        try assertSameModel(o.out, stopped.out)
    }

    /// A run killed before its first checkpoint has its run_options.json: --resume restarts it in place from step 0
    /// and ends with the bits of an uninterrupted run.
    func testRunStoppedBeforeItsFirstCheckpointRestartsInPlace() throws {
        let (dir, o) = try finishedRun(steps: 6)
        let fm = FileManager.default
        let original = try SafeTensorsFile(path: o.out + "/model.safetensors").tensor("model.norm.weight").array
        // What a SIGKILL before the first checkpoint leaves: the run directory with its options only.
        for name in try fm.contentsOfDirectory(atPath: o.out) where name != Pretrainer.runFileName {
            try fm.removeItem(atPath: o.out + "/" + name)
        }
        let (saved, path) = try Pretrainer.latestCheckpoint(in: o.out)
        XCTAssertNil(path)
        XCTAssertEqual(saved, o)
        _ = try Pretrainer(options: saved, resumeFrom: nil, continuingRun: true).run()
        let again = try SafeTensorsFile(path: o.out + "/model.safetensors").tensor("model.norm.weight").array
        XCTAssertEqual(original.map(\.bitPattern), again.map(\.bitPattern))
        // A new run refuses the existing directory without --overwrite, and a directory that is no run is named.
        XCTAssertThrowsError(try Pretrainer(options: o).run()) { XCTAssertTrue("\($0)".contains("already exists"), "\($0)") }
        XCTAssertThrowsError(try Pretrainer.latestCheckpoint(in: dir)) { XCTAssertTrue("\($0)".contains("run_options.json"), "\($0)") }
    }

    func testBadCorporaAreRefused() throws {
        let dir = try temporaryDirectory()
        var o = try options(dir, out: dir + "/never")
        try "\n\n  \n".write(toFile: dir + "/empty.txt", atomically: true, encoding: .utf8)
        o.corpus = dir + "/empty.txt"
        XCTAssertThrowsError(try Pretrainer(options: o)) { XCTAssertTrue("\($0)".contains("empty"), "\($0)") }
        try Data([0x61, 0x62, 0xFF, 0x63]).write(to: URL(fileURLWithPath: dir + "/binary.txt"))
        o.corpus = dir + "/binary.txt"
        XCTAssertThrowsError(try Pretrainer(options: o)) { XCTAssertTrue("\($0)".contains("UTF-8"), "\($0)") }
        o.corpus = dir + "/missing.txt"
        XCTAssertThrowsError(try Pretrainer(options: o)) { XCTAssertTrue("\($0)".contains("missing.txt"), "\($0)") }
        o = try options(dir, out: dir + "/never")
        o.dim = 30
        XCTAssertThrowsError(try Pretrainer(options: o))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/never"))
    }
}
