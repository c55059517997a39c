import Checkpoints
import Foundation
import Tensors
import XCTest

/// `lora merge`, `lora export-adapter` and `lora combine` end to end, and their answers to bad input: a clear
/// message, a non-zero exit, and nothing half-written.
final class MergeCommandTests: XCTestCase {
    let gqa = Lora.fixture("models/gqa")
    let qv = Lora.fixture("peft/lora-qv")

    func maxDifference(_ a: Tensor, _ b: Tensor) -> Float {
        var worst: Float = 0
        for i in 0..<b.count { worst = max(worst, abs(a[i] - b[i])) }
        return worst
    }

    func testMergeHFThenForwardGivesPEFTMergedLogits() throws {
        let dir = try Lora.temporaryDirectory()
        let run = try Lora.run(["merge", "--base", gqa, "--adapter", qv, "--out", dir + "/merged", "--format", "hf"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("self-check: max |logit(base+adapter) - logit(merged)|"), run.stdout)
        let expected = try SafeTensorsFile(path: Lora.fixture("export/merge.safetensors"))
        let ids = try expected.tensor("ids").array.map { String(Int($0)) }.joined(separator: ",")
        let forward = try Lora.run(["forward", "--base", dir + "/merged", "--ids", ids, "--out", dir + "/l.safetensors"])
        XCTAssertEqual(forward.status, 0, forward.stderr)
        let got = try SafeTensorsFile(path: dir + "/l.safetensors").tensor("logits")
        XCTAssertLessThan(maxDifference(got, try expected.tensor("logits_qv")), 1e-4)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }, [],
                       "no temporary directory is left behind")
    }

    func testMergeGGUFAndExportAdapterWriteLlamaCppFiles() throws {
        let dir = try Lora.temporaryDirectory()
        let merge = try Lora.run(["merge", "--base", gqa, "--adapter", qv, "--adapter", Lora.fixture("peft/lora-pattern") + ":0.5",
                                  "--out", dir + "/m.gguf", "--format", "gguf", "--dtype", "f16"])
        XCTAssertEqual(merge.status, 0, merge.stderr)
        let file = try GGUFFile(path: dir + "/m.gguf")
        XCTAssertEqual(file.metadata["general.architecture"], .string("llama"))
        XCTAssertEqual(file.info("blk.1.attn_q.weight")?.type, .f16)
        // Without an adapter, merge converts the base: the GGUF a llama.cpp adapter is applied to.
        let base = try Lora.run(["merge", "--base", gqa, "--out", dir + "/base.gguf", "--format", "gguf"])
        XCTAssertEqual(base.status, 0, base.stderr)
        XCTAssertTrue(base.stderr.contains("no adapter"), base.stderr)
        XCTAssertEqual(try GGUFFile(path: dir + "/base.gguf").tensors.count, 21)
        let export = try Lora.run(["export-adapter", "--adapter", qv, "--base", gqa, "--out", dir + "/a.gguf"])
        XCTAssertEqual(export.status, 0, export.stderr)
        let adapter = try GGUFFile(path: dir + "/a.gguf")
        XCTAssertEqual(adapter.metadata["general.type"], .string("adapter"))
        XCTAssertEqual(adapter.metadata["adapter.lora.alpha"], .float32(8))
        XCTAssertEqual(adapter.info("blk.0.attn_q.weight.lora_a")?.shape, [4, 32])
        XCTAssertEqual(adapter.info("blk.0.attn_q.weight.lora_b")?.shape, [32, 4])

        // Q8_0: GGUF only; the hf format refuses it before writing anything.
        let q8 = try Lora.run(["merge", "--base", gqa, "--adapter", qv, "--out", dir + "/q8.gguf", "--format", "gguf",
                               "--dtype", "q8_0"])
        XCTAssertEqual(q8.status, 0, q8.stderr)
        XCTAssertTrue(q8.stderr.contains("wrote gguf (q8_0)"), q8.stderr)
        XCTAssertEqual(try GGUFFile(path: dir + "/q8.gguf").info("blk.1.attn_q.weight")?.type, .q8_0)
        assertCleanFailure(try Lora.run(["merge", "--base", gqa, "--out", dir + "/q8-hf", "--format", "hf", "--dtype", "q8_0"]),
                           mentions: "--dtype q8_0 is a llama.cpp (GGUF) type")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/q8-hf"))
    }

    /// The ids llama.cpp produced from a GGUF vocabulary (recorded by scripts/make_export_fixtures.py) are the ids
    /// `lora tokenizer encode` prints. llama.cpp's "llama" tokenizer implements SentencePiece's BPE (LLaMA's own
    /// tokenizers are BPE), so the check uses the BPE fixture model; unigram models can segment differently there.
    func testLlamaCppTokenizesLikeTokenizerEncode() throws {
        let expected = try SafeTensorsFile(path: Lora.fixture("export/llamacpp/expected.safetensors"))
        var compared = 0
        for k in 0..<10 {
            guard let text = expected.metadata["text_\(k)"] else { continue }
            let want = try expected.tensor("bpe_text_ids_\(k)").array.map { String(Int($0)) }
            let run = try Lora.run(["tokenizer", "encode", "--model", Lora.fixture("tokenizer/bpe.model"), "--text", text])
            XCTAssertEqual(run.status, 0, run.stderr)
            let got = run.stdout.split(whereSeparator: { $0 == "," || $0.isWhitespace }).map(String.init)
            XCTAssertEqual(got, want, "text \(k): \(text)")
            compared += 1
        }
        XCTAssertGreaterThanOrEqual(compared, 3)
    }

    func testCombineWritesPEFTAdapter() throws {
        let dir = try Lora.temporaryDirectory()
        let run = try Lora.run(["combine", "--adapter", qv + ":0.7", "--adapter", Lora.fixture("export/adapter-b") + ":-0.4",
                                "--method", "cat", "--base", gqa, "--out", dir + "/cat"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let got = try SafeTensorsFile(path: dir + "/cat/adapter_model.safetensors")
        let want = try SafeTensorsFile(path: Lora.fixture("export/combine-cat/adapter_model.safetensors"))
        XCTAssertEqual(got.names.sorted(), want.names.sorted())
        for name in want.names { XCTAssertLessThan(maxDifference(try got.tensor(name), try want.tensor(name)), 1e-5, name) }
        let bad = try Lora.run(["combine", "--adapter", qv, "--adapter", Lora.fixture("peft/lora-all-rslora"),
                                "--method", "linear", "--base", gqa, "--out", dir + "/linear"])
        assertCleanFailure(bad, mentions: "same rank")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/linear"))
    }

    // MARK: bad input

    func testExistingOutputIsRefusedUnlessOverwrite() throws {
        let dir = try Lora.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/out", withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: dir + "/out/mine.txt"))
        let refused = try Lora.run(["merge", "--base", gqa, "--adapter", qv, "--out", dir + "/out"])
        assertCleanFailure(refused, mentions: "already exists")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/mine.txt"), "the existing output is untouched")
        let replaced = try Lora.run(["merge", "--base", gqa, "--adapter", qv, "--out", dir + "/out", "--overwrite"])
        XCTAssertEqual(replaced.status, 0, replaced.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/model.safetensors"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out/mine.txt"))
        try Data("old".utf8).write(to: URL(fileURLWithPath: dir + "/a.gguf"))
        assertCleanFailure(try Lora.run(["export-adapter", "--adapter", qv, "--base", gqa, "--out", dir + "/a.gguf"]),
                           mentions: "already exists")
        assertCleanFailure(try Lora.run(["merge", "--base", gqa, "--adapter", qv, "--out", dir + "/a.gguf", "--format", "gguf"]),
                           mentions: "--overwrite")
    }

    func testAdapterWithoutConfigOrWeightsIsRefused() throws {
        let dir = try Lora.temporaryDirectory()
        for (name, keep) in [("no-config", "adapter_model.safetensors"), ("no-weights", "adapter_config.json")] {
            let adapter = dir + "/" + name
            try FileManager.default.createDirectory(atPath: adapter, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: qv + "/" + keep, toPath: adapter + "/" + keep)
            let missing = keep == "adapter_config.json" ? "adapter_model.safetensors" : "adapter_config.json"
            for command in [["merge", "--base", gqa, "--adapter", adapter, "--out", dir + "/out-\(name)"],
                            ["export-adapter", "--base", gqa, "--adapter", adapter, "--out", dir + "/out-\(name).gguf"],
                            ["combine", "--base", gqa, "--adapter", adapter, "--method", "cat", "--out", dir + "/out-\(name)"]] {
                assertCleanFailure(try Lora.run(command), mentions: missing)
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["no-config", "no-weights"],
                       "nothing was written")
    }

    func testAdapterForAnotherBaseNamesTensorAndShapes() throws {
        let dir = try Lora.temporaryDirectory()
        let run = try Lora.run(["merge", "--base", Lora.fixture("models/tied"), "--adapter", qv, "--out", dir + "/m"])
        assertCleanFailure(run, mentions: "self_attn.q_proj.lora_A.weight has shape [4, 32], the base needs [4, 24]")
        let export = try Lora.run(["export-adapter", "--base", Lora.fixture("models/tied"), "--adapter", qv, "--out", dir + "/a.gguf"])
        assertCleanFailure(export, mentions: "[4, 24]")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    func testUnwritableOutputIsRefusedBeforeAnyWork() throws {
        let dir = try Lora.temporaryDirectory()
        try Data("a file".utf8).write(to: URL(fileURLWithPath: dir + "/file"))
        for format in ["hf", "gguf"] {
            let run = try Lora.run(["merge", "--base", gqa, "--adapter", qv, "--out", dir + "/file/sub/out", "--format", format])
            assertCleanFailure(run, mentions: "cannot write here")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["file"])
    }
}
