import Checkpoints
import Foundation
import XCTest

/// `lora finetune`, `eval` and `--adapter` end to end, and their answers to bad input.
final class FinetuneCommandTests: XCTestCase {
    let gqa = Lora.fixture("models/gqa")
    let data = Lora.fixture("peft/train3/data.json")

    func finetune(_ extra: [String], out: String) throws -> LoraRun {
        try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "2", "--batch-size", "2"] + extra)
    }

    func testForwardWithPEFTAdaptersMatchesPEFT() throws {
        let dir = try Lora.temporaryDirectory()
        for name in ["lora-qv", "lora-all-rslora", "lora-pattern"] {
            let root = Lora.fixture("peft/\(name)")
            let expected = try SafeTensorsFile(path: root + "/expected.safetensors")
            let ids = try expected.tensor("ids").array.map { String(Int($0)) }.joined(separator: ",")
            let run = try Lora.run(["forward", "--base", gqa, "--adapter", root, "--ids", ids, "--out", dir + "/\(name).st"])
            XCTAssertEqual(run.status, 0, run.stderr)
            let got = try SafeTensorsFile(path: dir + "/\(name).st").tensor("logits")
            let want = try expected.tensor("logits")
            var worst: Float = 0
            for i in 0..<want.count { worst = max(worst, abs(got[i] - want[i])) }
            XCTAssertLessThan(worst, 1e-4, name)
        }
        // Two adapters add up; a weight of 0 removes one.
        let ids = "1,17,42,99"
        let a = Lora.fixture("peft/lora-qv"), b = Lora.fixture("peft/lora-pattern")
        _ = try Lora.run(["forward", "--base", gqa, "--adapter", a, "--ids", ids, "--out", dir + "/a.st"])
        _ = try Lora.run(["forward", "--base", gqa, "--adapter", a, "--adapter", b + ":0", "--ids", ids, "--out", dir + "/a0.st"])
        _ = try Lora.run(["forward", "--base", gqa, "--adapter", a, "--adapter", b, "--ids", ids, "--out", dir + "/ab.st"])
        let la = try SafeTensorsFile(path: dir + "/a.st").tensor("logits")
        let la0 = try SafeTensorsFile(path: dir + "/a0.st").tensor("logits")
        let lab = try SafeTensorsFile(path: dir + "/ab.st").tensor("logits")
        XCTAssertEqual(la.array, la0.array)
        XCTAssertNotEqual(la.array, lab.array)
    }

    func testFinetuneWritesAPEFTAdapterMetricsAndResumes() throws {
        let out = try Lora.temporaryDirectory() + "/run"
        let run = try finetune(["--targets", "q,v", "--save-every", "1"], out: out)
        XCTAssertEqual(run.status, 0, run.stderr)
        for file in ["adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "checkpoint-2/trainer_state.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + file), file)
        }
        let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        XCTAssertTrue(lines[0].contains("\"tokens_per_s\""))
        XCTAssertTrue(run.stdout.contains("tokens/s") && run.stdout.contains("peak RSS"), run.stdout)
        // A finished run resumes to the same place and writes nothing new.
        let resumed = try Lora.run(["finetune", "--resume", out])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        // The output directory exists now: refused without --overwrite.
        assertCleanFailure(try finetune([], out: out), mentions: "--overwrite")
        XCTAssertEqual(try finetune(["--overwrite"], out: out).status, 0)

        let eval = try Lora.run(["eval", "--base", gqa, "--adapter", out, "--data", data, "--limit", "2"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any]
        for key in ["loss", "perplexity", "exact_match", "examples"] { XCTAssertNotNil(report?[key], key) }
        let generate = try Lora.run(["generate", "--base", gqa, "--adapter", out, "--instruction", "Hi", "--max-new-tokens", "3"])
        XCTAssertEqual(generate.status, 0, generate.stderr)
    }

    /// Conversation records: fine-tuned in the zephyr template (kept in the run's options, so a resume uses it),
    /// evaluated, and answered by `generate --chat-template`; a conversation the template cannot write, an unknown
    /// template and options that do not go together fail cleanly.
    func testConversationDataTrainsEvaluatesAndGenerates() throws {
        let dir = try Lora.temporaryDirectory()
        let chat = dir + "/chat.jsonl"
        let lines = (0..<6).map { i in
            #"{"messages": [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "\#(i) plus \#(i)?"}, {"role": "assistant", "content": "\#(2 * i)"}, {"role": "user", "content": "and minus \#(i)?"}, {"role": "assistant", "content": "\#(i)"}]}"#
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: chat, atomically: true, encoding: .utf8)
        let out = dir + "/run"
        let run = try Lora.run(["finetune", "--base", gqa, "--data", chat, "--out", out, "--steps", "2", "--batch-size", "2",
                                "--chat-template", "zephyr", "--save-every", "1"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stderr.contains("conversations: written in the zephyr chat template"), run.stderr)
        let options = try String(contentsOfFile: out + "/run_options.json", encoding: .utf8)
        XCTAssertTrue(options.contains("zephyr"), options)
        XCTAssertEqual(try Lora.run(["finetune", "--resume", out]).status, 0)

        let eval = try Lora.run(["eval", "--base", gqa, "--adapter", out, "--data", chat, "--chat-template", "zephyr", "--limit", "2"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any])
        let examples = try XCTUnwrap(report["examples"] as? [[String: Any]])
        XCTAssertEqual(examples.first?["expected"] as? String, "0")
        XCTAssertEqual(examples.first?["instruction"] as? String, "and minus 0?")

        let generate = try Lora.run(["generate", "--base", gqa, "--adapter", out, "--chat-template", "zephyr",
                                     "--system", "Answer with a number.", "--instruction", "3 plus 3?", "--max-new-tokens", "3"])
        XCTAssertEqual(generate.status, 0, generate.stderr)
        assertCleanFailure(try Lora.run(["generate", "--base", gqa, "--chat-template", "zephyr", "--instruction", "a",
                                         "--input", "b"]), mentions: "--chat-template sends --instruction as a user message")
        assertCleanFailure(try Lora.run(["generate", "--base", gqa, "--system", "s", "--instruction", "a"]),
                           mentions: "--system goes with --chat-template")

        // llama2 (the default) needs users and assistants alternating.
        let twoUsers = dir + "/two.jsonl"
        try #"{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}"#
            .write(toFile: twoUsers, atomically: true, encoding: .utf8)
        assertCleanFailure(try Lora.run(["finetune", "--base", gqa, "--data", twoUsers, "--out", dir + "/two", "--steps", "1"]),
                           mentions: "two.jsonl: record 1: the llama2 chat template needs user and assistant messages alternating")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/two/adapter_model.safetensors"))
        assertCleanFailure(try Lora.run(["finetune", "--base", gqa, "--data", chat, "--out", dir + "/x", "--steps", "1",
                                         "--chat-template", "vicuna"]), mentions: "unknown chat template \"vicuna\"")
    }

    /// mlx-lm's data directory: train.jsonl trains, valid.jsonl validates (unless --val-fraction says otherwise),
    /// and `eval` reads test.jsonl; the run's options name the files, so a resume finds them.
    func testDataDirectoryInMLXLayout() throws {
        let dir = try Lora.temporaryDirectory()
        let records = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: data))) as? [[String: Any]])
        let lines = try records.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        let data = dir + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        for (name, part) in [("train", lines), ("valid", Array(lines.prefix(2))), ("test", Array(lines.suffix(1)))] {
            try (part.joined(separator: "\n") + "\n").write(toFile: data + "/\(name).jsonl", atomically: true, encoding: .utf8)
        }
        let out = dir + "/run"
        let run = try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "2", "--batch-size", "2"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stderr.contains("data: \(lines.count) training examples, 2 validation"), run.stderr)
        let options = try String(contentsOfFile: out + "/run_options.json", encoding: .utf8)
        XCTAssertTrue(options.contains("train.jsonl") && options.contains("valid.jsonl"), options)
        XCTAssertEqual(try Lora.run(["finetune", "--resume", out]).status, 0)
        let split = try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", dir + "/split", "--steps", "1",
                                  "--val-fraction", "0.5"])
        XCTAssertTrue(split.stderr.contains("data: 2 training examples, 2 validation"), split.stderr)

        let eval = try Lora.run(["eval", "--base", gqa, "--adapter", out, "--data", data, "--no-generate"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(report?["count"] as? Int, 1, "test.jsonl's one record")

        try FileManager.default.removeItem(atPath: data + "/train.jsonl")
        assertCleanFailure(try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", dir + "/none", "--steps", "1"]),
                           mentions: "a data directory needs train.jsonl or train.json")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/none"))
    }

    func testBadFinetuneInputsFailCleanlyAndWriteNothing() throws {
        let dir = try Lora.temporaryDirectory()
        let out = dir + "/never"
        func write(_ text: String, _ name: String) throws -> String {
            let path = dir + "/" + name
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let cases: [([String], String)] = [
            (["--data", try write("[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": }]", "bad.json")], "line 2"),
            (["--data", try write("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\"}\n", "nooutput.jsonl")], "output"),
            (["--data", try write("[{\"instruction\": 5, \"output\": \"b\"}]", "nonstring.json")], "instruction"),
            (["--data", try write("[]", "empty.json")], "no records"),
            (["--max-seq-len", "8", "--skip-long"], "--max-seq-len"),
            (["--targets", "q,banana"], "banana"),
            (["--rank", "0"], "--rank"),
            (["--alpha", "-1"], "--alpha"),
            (["--dropout", "1"], "--dropout"),
            (["--layers", "5"], "5"),
            (["--init-adapter", dir + "/missing-adapter"], "missing-adapter"),
            (["--lr-schedule", "exponential"], "exponential"),
        ]
        for (extra, needle) in cases {
            var arguments = ["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "1"]
            if let i = extra.firstIndex(of: "--data") {
                arguments[4] = extra[i + 1]
                arguments += extra.enumerated().filter { $0.offset != i && $0.offset != i + 1 }.map(\.element)
            } else {
                arguments += extra
            }
            assertCleanFailure(try Lora.run(arguments), mentions: needle)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(extra) left \(out) behind")
        }
        // Invalid UTF-8 in the data.
        let binary = dir + "/latin1.json"
        try Data("[{\"instruction\": \"caf".utf8 + [0xE9] + "\", \"output\": \"x\"}]".utf8).write(to: URL(fileURLWithPath: binary))
        assertCleanFailure(try Lora.run(["finetune", "--base", gqa, "--data", binary, "--out", out]), mentions: "UTF-8")
        // An adapter made for another base: name the tensor and both shapes.
        let headdim = Lora.fixture("models/headdim")
        assertCleanFailure(try Lora.run(["forward", "--base", headdim, "--adapter", Lora.fixture("peft/lora-qv"),
                                         "--ids", "1,2", "--out", dir + "/x.st"]), mentions: "lora_")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}

/// `--dora` end to end: training writes PEFT's DoRA layout, checkpoints carry the magnitudes, and unsupported
/// combinations are refused before any work.
final class DoRACommandTests: XCTestCase {
    let gqa = Lora.fixture("models/gqa")
    let data = Lora.fixture("peft/train3/data.json")

    func testFinetuneDoRAWritesMagnitudesAndTrainsThem() throws {
        let out = try Lora.temporaryDirectory() + "/run"
        let run = try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "2",
                                "--batch-size", "2", "--targets", "q,o", "--dora", "--lr", "1e-2", "--save-every", "1"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json")))
        XCTAssertEqual((config as? [String: Any])?["use_dora"] as? Bool, true)
        let name = "base_model.model.model.layers.1.self_attn.o_proj.lora_magnitude_vector"
        let first = try SafeTensorsFile(path: out + "/checkpoint-1/adapter_model.safetensors").tensor(name)
        let last = try SafeTensorsFile(path: out + "/adapter_model.safetensors").tensor(name)
        XCTAssertEqual(last.shape, [32])
        XCTAssertNotEqual(first.array, last.array, "the magnitudes are trained")
        XCTAssertEqual(try Lora.run(["finetune", "--resume", out]).status, 0)

        // The adapter runs in forward and merges (merge checks itself against base + adapter).
        let ids = "1,17,42,99"
        let forward = try Lora.run(["forward", "--base", gqa, "--adapter", out, "--ids", ids, "--out", out + "/l.st"])
        XCTAssertEqual(forward.status, 0, forward.stderr)
        let merge = try Lora.run(["merge", "--base", gqa, "--adapter", out, "--out", out + "/merged", "--format", "hf"])
        XCTAssertEqual(merge.status, 0, merge.stderr)
        assertCleanFailure(try Lora.run(["export-adapter", "--adapter", out, "--base", gqa, "--out", out + "/a.gguf"]),
                           mentions: "DoRA")
    }

    func testDoRARefusesPlainInitAdapter() throws {
        let out = try Lora.temporaryDirectory() + "/run"
        assertCleanFailure(try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "1",
                                         "--dora", "--init-adapter", Lora.fixture("peft/lora-qv")]),
                           mentions: "--dora")
    }

    func testForwardWithPEFTDoRAAdapterMatchesPEFT() throws {
        let root = Lora.fixture("dora/dora-mixed")
        let expected = try SafeTensorsFile(path: root + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { String(Int($0)) }.joined(separator: ",")
        let out = try Lora.temporaryDirectory() + "/logits.st"
        let run = try Lora.run(["forward", "--base", gqa, "--adapter", root, "--ids", ids, "--out", out])
        XCTAssertEqual(run.status, 0, run.stderr)
        let got = try SafeTensorsFile(path: out).tensor("logits"), want = try expected.tensor("logits")
        var worst: Float = 0
        for i in 0..<want.count { worst = max(worst, abs(got[i] - want[i])) }
        XCTAssertLessThan(worst, 1e-4)
    }
}

/// `--init pissa` end to end: the saved adapter is the rank-2r LoRA for the original base, a resumed run ends with
/// the same bytes as an uninterrupted one, and combinations PiSSA cannot serve are refused.
final class PiSSACommandTests: XCTestCase {
    let gqa = Lora.fixture("models/gqa")
    let data = Lora.fixture("peft/train3/data.json")

    func testPiSSARunSavesConvertedAdapterAndResumesExactly() throws {
        try checkPiSSARun(quantize: "none")
    }

    /// QPiSSA: the same on an NF4 base (the residual quantized after the SVD), resumed exactly too; and the fast
    /// (randomized) SVD of `pissa_niter_K`.
    func testQuantizedPiSSARunResumesExactly() throws {
        try checkPiSSARun(quantize: "nf4")
    }

    func testFastPiSSARunResumesExactly() throws {
        try checkPiSSARun(quantize: "none", initialization: "pissa_niter_2")
    }

    func checkPiSSARun(quantize: String, initialization: String = "pissa") throws {
        let out = try Lora.temporaryDirectory() + "/run"
        let run = try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "3",
                                "--batch-size", "2", "--targets", "q,v", "--rank", "4", "--alpha", "8",
                                "--init", initialization, "--lr", "1e-3", "--dropout", "0.1", "--save-every", "1",
                                "--quantize", quantize])
        XCTAssertEqual(run.status, 0, run.stderr)
        // the model that trained: NF4 projections when asked (the residuals quantized), F32 otherwise
        XCTAssertEqual(run.stderr.contains("projections stored as nf4"), quantize == "nf4", run.stderr)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json"))) as? [String: Any]
        XCTAssertEqual(config?["r"] as? Int, 8)
        XCTAssertEqual(config?["lora_alpha"] as? Int, 16)
        XCTAssertEqual(config?["init_lora_weights"] as? Bool, true)
        let final = try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_model.safetensors"))
        // Back to the state after step 2, then resume: A₀ and B₀ come from the checkpoint's converted adapter.
        try FileManager.default.removeItem(atPath: out + "/checkpoint-3")
        try FileManager.default.removeItem(atPath: out + "/adapter_model.safetensors")
        let resumed = try Lora.run(["finetune", "--resume", out])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_model.safetensors")), final)
        // A plain LoRA for the original base: merge takes it as it is.
        let merge = try Lora.run(["merge", "--base", gqa, "--adapter", out, "--out", out + "/merged", "--format", "hf"])
        XCTAssertEqual(merge.status, 0, merge.stderr)
    }

    func testPiSSARefusals() throws {
        let out = try Lora.temporaryDirectory() + "/run"
        let common = ["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "1", "--init", "pissa"]
        assertCleanFailure(try Lora.run(common + ["--init-adapter", Lora.fixture("peft/lora-qv")]), mentions: "--init-adapter")
        assertCleanFailure(try Lora.run(common + ["--dora"]), mentions: "--dora")
        assertCleanFailure(try Lora.run(common + ["--targets", "v", "--rank", "20"]), mentions: "min(in, out)")
        assertCleanFailure(try Lora.run(common + ["--init", "pissa_niter_x"]), mentions: "pissa_niter_K")
    }
}
