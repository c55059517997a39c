import Checkpoints
import Foundation
import XCTest

/// `--base model.gguf`: every command takes a llama.cpp file as its base, as it takes a Hugging Face directory.
final class GGUFBaseCommandTests: XCTestCase {
    let q4km = Lora.fixture("gguf-base/model-q4_k_m.gguf")
    let data = Lora.fixture("peft/train3/data.json")
    /// The shipped base (a SentencePiece BPE tokenizer, which a GGUF vocabulary keeps exactly).
    let shipped = Lora.fixtures.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("checkpoints/base").path

    func succeed(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> LoraRun {
        let run = try Lora.run(arguments)
        XCTAssertEqual(run.status, 0, "lora \(arguments.joined(separator: " ")): \(run.stderr)", file: file, line: line)
        return run
    }

    /// The shipped base converted to an F32 GGUF fine-tunes into the same adapter, byte for byte, as the
    /// directory it came from (the same weights and the same token ids), and answers the same.
    func testFineTuningAGGUFConversionEqualsFineTuningTheDirectory() throws {
        let dir = try Lora.temporaryDirectory()
        let gguf = dir + "/base.gguf"
        _ = try succeed(["merge", "--base", shipped, "--format", "gguf", "--out", gguf])
        for (name, base) in [("hf", shipped), ("gguf", gguf)] {
            _ = try succeed(["finetune", "--base", base, "--data", data, "--out", dir + "/" + name, "--steps", "3",
                             "--batch-size", "2", "--targets", "q,v,down"])
        }
        let adapters = try ["hf", "gguf"].map { try Data(contentsOf: URL(fileURLWithPath: dir + "/\($0)/adapter_model.safetensors")) }
        XCTAssertEqual(adapters[0], adapters[1], "the adapter trained on the GGUF file is the directory's")
        let answers = try [shipped, gguf].map { base in
            try succeed(["generate", "--base", base, "--adapter", dir + "/hf", "--instruction", "Which number is the largest?",
                         "--input", "3 9 4", "--max-new-tokens", "4"]).stdout
        }
        XCTAssertEqual(answers[0], answers[1])
    }

    /// llama.cpp's Q4_K_M file: fine-tuned (also on an NF4 copy), evaluated, its adapter exported for llama.cpp and
    /// merged; converted to a Hugging Face directory (with a tokenizer.model built from its vocabulary) it gives the
    /// same logits and the same token ids as the file itself; its own chat template (zephyr) is found.
    func testQuantizedLlamaCppFileTrainsExportsAndConverts() throws {
        let dir = try Lora.temporaryDirectory()
        let run = dir + "/run"
        _ = try succeed(["finetune", "--base", q4km, "--data", data, "--out", run, "--steps", "2", "--batch-size", "2",
                         "--targets", "all"])
        let config = try String(contentsOfFile: run + "/adapter_config.json", encoding: .utf8)
        XCTAssertTrue(config.contains("model-q4_k_m.gguf"), "base_model_name_or_path names the file: \(config)")
        _ = try succeed(["finetune", "--base", q4km, "--data", data, "--out", dir + "/qlora", "--steps", "2",
                         "--batch-size", "2", "--quantize", "nf4"])
        let eval = try succeed(["eval", "--base", q4km, "--adapter", run, "--data", data, "--limit", "2"])
        XCTAssertTrue(eval.stdout.contains("\"loss\""), eval.stdout)
        _ = try succeed(["export-adapter", "--base", q4km, "--adapter", run, "--out", dir + "/adapter.gguf"])
        XCTAssertEqual(try GGUFFile(path: dir + "/adapter.gguf").metadata["general.type"], .string("adapter"))
        _ = try succeed(["merge", "--base", q4km, "--adapter", run, "--format", "gguf", "--dtype", "q8_0",
                         "--out", dir + "/merged.gguf"])
        let template = try GGUFFile(path: q4km).metadata["tokenizer.chat_template"]
        XCTAssertNotNil(template)
        XCTAssertEqual(try GGUFFile(path: dir + "/merged.gguf").metadata["tokenizer.chat_template"], template,
                       "the merged file keeps the base file's chat template")

        _ = try succeed(["merge", "--base", q4km, "--format", "hf", "--out", dir + "/hf"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/hf/tokenizer.model"))
        let ids = "1,17,250,3,399,42"
        for (name, base) in [("file", q4km), ("directory", dir + "/hf")] {
            _ = try succeed(["forward", "--base", base, "--adapter", run, "--ids", ids, "--out", dir + "/\(name).st"])
        }
        let logits = try ["file", "directory"].map { try SafeTensorsFile(path: dir + "/\($0).st").tensor("logits").array }
        XCTAssertEqual(logits[0], logits[1], "the converted directory is the file's model")
        // llama.cpp's ids for these texts (tokens.json): the same from the file and from the written tokenizer.model
        let tokens = try Data(contentsOf: URL(fileURLWithPath: Lora.fixture("gguf-base/tokens.json")))
        let want = try XCTUnwrap(try JSONSerialization.jsonObject(with: tokens) as? [String: [Int]])
        for (text, ids) in want {
            for model in [q4km, dir + "/hf/tokenizer.model"] {
                let encoded = try succeed(["tokenizer", "encode", "--model", model, "--text", text]).stdout
                XCTAssertEqual(encoded.trimmingCharacters(in: .newlines), ids.map(String.init).joined(separator: ","), "\(model): \(text)")
            }
        }

        let chat = try succeed(["generate", "--base", q4km, "--chat-template", "auto", "--instruction", "hi",
                                "--max-new-tokens", "2"])
        XCTAssertFalse(chat.stdout.isEmpty)
    }

    func testBadGGUFBasesFailCleanly() throws {
        let dir = try Lora.temporaryDirectory()
        assertCleanFailure(try Lora.run(["generate", "--base", dir + "/missing.gguf", "--instruction", "hi"]),
                           mentions: "missing.gguf: no such GGUF file")
        let text = dir + "/notes.txt"
        try "not a model".write(toFile: text, atomically: true, encoding: .utf8)
        assertCleanFailure(try Lora.run(["finetune", "--base", text, "--data", data, "--out", dir + "/run", "--steps", "1"]),
                           mentions: "notes.txt: is neither a model directory nor a GGUF file")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/run"), "nothing is written for a bad base")
        // a truncated copy of the fixture
        let bytes = try Data(contentsOf: URL(fileURLWithPath: q4km))
        let truncated = dir + "/truncated.gguf"
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        assertCleanFailure(try Lora.run(["eval", "--base", truncated, "--data", data]), mentions: "truncated.gguf")
    }
}
