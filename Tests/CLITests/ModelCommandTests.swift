import Checkpoints
import Foundation
import Tensors
import XCTest

/// `lora forward`, `generate` and `tokenizer` end to end, and their answers to bad input.
final class ModelCommandTests: XCTestCase {
    let gqa = Lora.fixture("models/gqa")

    func testForwardIdsWritesTransformersLogits() throws {
        let dir = try Lora.temporaryDirectory()
        let expected = try SafeTensorsFile(path: gqa + "/expected.safetensors")
        let ids = try expected.tensor("ids"), lengths = try expected.tensor("lengths")
        let tokens = (0..<Int(lengths[0])).map { String(Int(ids[$0])) }.joined(separator: ",")
        let run = try Lora.run(["forward", "--base", gqa, "--ids", tokens, "--out", dir + "/logits.safetensors"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let got = try SafeTensorsFile(path: dir + "/logits.safetensors").tensor("logits")
        let want = try expected.tensor("single_logits")
        XCTAssertEqual(got.shape, want.shape)
        var worst: Float = 0
        for i in 0..<want.count { worst = max(worst, abs(got[i] - want[i])) }
        XCTAssertLessThan(worst, 1e-4)
    }

    func testForwardTextPrependsBOSAndMatchesTransformers() throws {
        let dir = try Lora.temporaryDirectory()
        let expected = try SafeTensorsFile(path: gqa + "/expected.safetensors")
        guard let text = expected.metadata["text"] else { return XCTFail("fixture lacks the text metadata") }
        let run = try Lora.run(["forward", "--base", gqa, "--text", text, "--out", dir + "/logits.safetensors"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let got = try SafeTensorsFile(path: dir + "/logits.safetensors").tensor("logits")
        let want = try expected.tensor("text_logits")
        XCTAssertEqual(got.shape, want.shape)
        var worst: Float = 0
        for i in 0..<want.count { worst = max(worst, abs(got[i] - want[i])) }
        XCTAssertLessThan(worst, 1e-4)
    }

    func testGenerateGreedyIsDeterministicAndSampledDependsOnSeed() throws {
        let greedyA = try Lora.run(["generate", "--base", gqa, "--prompt", "The torou", "--max-new-tokens", "8"])
        let greedyB = try Lora.run(["generate", "--base", gqa, "--prompt", "The torou", "--max-new-tokens", "8"])
        XCTAssertEqual(greedyA.status, 0, greedyA.stderr)
        XCTAssertEqual(greedyA.stdout, greedyB.stdout)
        XCTAssertTrue(greedyA.stderr.contains("tokens/s"))
        let s1 = try Lora.run(["generate", "--base", gqa, "--prompt", "The torou", "--max-new-tokens", "12",
                               "--temperature", "1.5", "--seed", "1"])
        let s1again = try Lora.run(["generate", "--base", gqa, "--prompt", "The torou", "--max-new-tokens", "12",
                                    "--temperature", "1.5", "--seed", "1"])
        let s2 = try Lora.run(["generate", "--base", gqa, "--prompt", "The torou", "--max-new-tokens", "12",
                               "--temperature", "1.5", "--seed", "2"])
        XCTAssertEqual(s1.stdout, s1again.stdout)
        XCTAssertNotEqual(s1.stdout, s2.stdout)
        let instruction = try Lora.run(["generate", "--base", gqa, "--instruction", "Say hi", "--max-new-tokens", "4"])
        XCTAssertEqual(instruction.status, 0, instruction.stderr)
    }

    /// On a terminal (a pty from util-linux's `script`) the answer is written as it is generated, piece by piece; what
    /// ends up on the screen is what a pipe gets in one piece, sampled answers with byte-fallback pieces included.
    func testGenerateStreamsToATerminalTheTextAPipeGets() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { throw XCTSkip("no /usr/bin/script") }
        for seed in ["1", "2", "3"] {
            let arguments = ["generate", "--base", gqa, "--prompt", "The torou", "--max-new-tokens", "40",
                             "--temperature", "1.5", "--seed", seed]
            let piped = try Lora.run(arguments)
            XCTAssertEqual(piped.status, 0, piped.stderr)
            let command = ([Lora.executable.path] + arguments).map { "'" + $0 + "'" }.joined(separator: " ") + " 2>/dev/null"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
            process.arguments = ["-q", "-e", "-c", command, "/dev/null"]
            let out = Pipe()
            process.standardOutput = out
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0)
            let screen = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            XCTAssertEqual(screen, piped.stdout, "seed \(seed)")
        }
    }

    func testPromptListSwitchesAdaptersPerPromptAsSeparateRunsWould() throws {
        let dir = try Lora.temporaryDirectory()
        let qv = Lora.fixture("peft/lora-qv"), all = Lora.fixture("peft/lora-all-rslora")
        let list = dir + "/prompts.jsonl"
        try Data("""
            {"prompt": "The torou", "adapters": []}
            {"prompt": "The torou", "adapter": "\(qv)"}

            {"prompt": "sanga 2024", "adapters": ["\(all):0.5", "\(qv)"]}
            {"prompt": "The torou", "adapters": []}
            """.utf8).write(to: URL(fileURLWithPath: list))
        let batch = try Lora.run(["generate", "--base", gqa, "--prompts", list, "--max-new-tokens", "6"])
        XCTAssertEqual(batch.status, 0, batch.stderr)
        let lines = batch.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 4, batch.stdout)
        XCTAssertTrue(batch.stderr.contains("2 adapter(s) loaded once"), batch.stderr)
        // Each answer equals a fresh process's answer with the same adapters: switching leaves nothing behind.
        let singles: [[String]] = [["--prompt", "The torou"], ["--prompt", "The torou", "--adapter", qv],
                                   ["--prompt", "sanga 2024", "--adapter", all + ":0.5", "--adapter", qv],
                                   ["--prompt", "The torou"]]
        for (line, arguments) in zip(lines, singles) {
            let single = try Lora.run(["generate", "--base", gqa, "--max-new-tokens", "6"] + arguments)
            XCTAssertEqual(single.status, 0, single.stderr)
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            XCTAssertEqual(object?["output"] as? String, String(single.stdout.dropLast()), line)
        }
        XCTAssertTrue(lines[2].contains("\"line\":4"), lines[2])

        // A conversation line is written in --chat-template, as `--chat-template … --system … --instruction` is.
        for template in ["llama2", "zephyr"] {
            try Data(#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The torou"}]}"#.utf8)
                .write(to: URL(fileURLWithPath: list))
            let chat = try Lora.run(["generate", "--base", gqa, "--prompts", list, "--chat-template", template, "--max-new-tokens", "6"])
            XCTAssertEqual(chat.status, 0, chat.stderr)
            let single = try Lora.run(["generate", "--base", gqa, "--chat-template", template, "--system", "Be brief.",
                                       "--instruction", "The torou", "--max-new-tokens", "6"])
            XCTAssertEqual(single.status, 0, single.stderr)
            let object = try JSONSerialization.jsonObject(with: Data(chat.stdout.utf8)) as? [String: Any]
            XCTAssertEqual(object?["output"] as? String, String(single.stdout.dropLast()), template)
        }
        try Data(#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#.utf8)
            .write(to: URL(fileURLWithPath: list))
        assertCleanFailure(try Lora.run(["generate", "--base", gqa, "--prompts", list]),
                           mentions: "line 1: the conversation must end with the user message to answer, ends with an assistant message")
        try Data(#"{"messages": [{"role": "user", "content": "a"}], "prompt": "b"}"#.utf8).write(to: URL(fileURLWithPath: list))
        assertCleanFailure(try Lora.run(["generate", "--base", gqa, "--prompts", list]),
                           mentions: "needs exactly one of \"instruction\", \"prompt\" or \"messages\"")

        try Data("{\"prompt\": \"a\"}\n[1]\n".utf8).write(to: URL(fileURLWithPath: list))
        assertCleanFailure(try Lora.run(["generate", "--base", gqa, "--prompts", list]), mentions: "line 2 is an array")
        try Data("{\"prompt\": \"a\", \"adapter\": \"\(dir)/none\"}\n".utf8).write(to: URL(fileURLWithPath: list))
        assertCleanFailure(try Lora.run(["generate", "--base", gqa, "--prompts", list]), mentions: "line 1")
    }

    /// `lora chat`: each input line is a user message; the answers are those of `generate` on the conversation so far
    /// (the first turn as `--chat-template --system --instruction`, the second as a `--prompts` conversation line);
    /// /reset starts over, empty lines are skipped.
    func testChatAnswersEachLineInTheConversationSoFar() throws {
        let dir = try Lora.temporaryDirectory()
        let common = ["--base", gqa, "--chat-template", "zephyr", "--max-new-tokens", "5"]
        let chat = try Lora.run(["chat", "--system", "Be brief."] + common, stdin: "The torou\n\nsanga 2024\n/reset\nThe torou\n")
        XCTAssertEqual(chat.status, 0, chat.stderr)
        let answers = chat.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        XCTAssertEqual(answers.count, 3, chat.stdout)
        let first = try Lora.run(["generate", "--system", "Be brief.", "--instruction", "The torou"] + common)
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertEqual(answers.first, String(first.stdout.dropLast()))
        XCTAssertEqual(answers.last, answers.first, "after /reset the conversation starts over")
        let messages: [[String: String]] = [["role": "system", "content": "Be brief."], ["role": "user", "content": "The torou"],
                                             ["role": "assistant", "content": answers[0]], ["role": "user", "content": "sanga 2024"]]
        let list = dir + "/second.jsonl"
        try JSONSerialization.data(withJSONObject: ["messages": messages]).write(to: URL(fileURLWithPath: list))
        let second = try Lora.run(["generate", "--prompts", list] + common)
        XCTAssertEqual(second.status, 0, second.stderr)
        let object = try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(object?["output"] as? String, answers[1])
        // a line ending in a backslash goes on: the message "Which is smallest?\n7 3 9", answered as generate
        // answers that instruction (CRLF line ends as a Windows terminal would send them)
        let twoLines = try Lora.run(["chat"] + common, stdin: "Which is smallest?\\\r\n7 3 9\r\n")
        XCTAssertEqual(twoLines.status, 0, twoLines.stderr)
        let direct = try Lora.run(["generate", "--instruction", "Which is smallest?\n7 3 9"] + common)
        XCTAssertEqual(twoLines.stdout, direct.stdout)
        XCTAssertNotEqual(twoLines.stdout, try Lora.run(["generate", "--instruction", "Which is smallest? 7 3 9"] + common).stdout,
                          "the line break is part of the message")
        // mistral has no system message: refused before reading anything
        assertCleanFailure(try Lora.run(["chat", "--base", gqa, "--chat-template", "mistral", "--system", "x"], stdin: "hi\n"),
                           mentions: "has no \"system\" text")
    }

    func testBadModelInputsFailCleanly() throws {
        let dir = try Lora.temporaryDirectory()
        let out = dir + "/logits.safetensors"
        assertCleanFailure(try Lora.run(["forward", "--base", dir + "/missing", "--ids", "1", "--out", out]),
                           mentions: "no such model directory")
        assertCleanFailure(try Lora.run(["forward", "--base", dir, "--ids", "1", "--out", out]), mentions: "config.json")
        assertCleanFailure(try Lora.run(["forward", "--base", gqa, "--ids", "1,320", "--out", out]),
                           mentions: "outside the vocabulary")
        assertCleanFailure(try Lora.run(["forward", "--base", gqa, "--ids", "1,x", "--out", out]), mentions: "'x'")

        // A model directory whose weights lie: truncated, and with a config that disagrees with the tensors.
        let broken = dir + "/broken"
        try FileManager.default.createDirectory(atPath: broken, withIntermediateDirectories: true)
        for name in ["config.json", "tokenizer.model"] {
            try FileManager.default.copyItem(atPath: gqa + "/" + name, toPath: broken + "/" + name)
        }
        let weights = try Data(contentsOf: URL(fileURLWithPath: gqa + "/model.safetensors"))
        try weights.prefix(weights.count / 2).write(to: URL(fileURLWithPath: broken + "/model.safetensors"))
        assertCleanFailure(try Lora.run(["forward", "--base", broken, "--ids", "1,2", "--out", out]),
                           mentions: "model.safetensors")
        try weights.write(to: URL(fileURLWithPath: broken + "/model.safetensors"))
        var config = try String(contentsOfFile: gqa + "/config.json", encoding: .utf8)
        config = config.replacingOccurrences(of: "\"hidden_size\": 32", with: "\"hidden_size\": 40")
        try config.write(toFile: broken + "/config.json", atomically: true, encoding: .utf8)
        assertCleanFailure(try Lora.run(["forward", "--base", broken, "--ids", "1,2", "--out", out]), mentions: "shape")
        try "{ not json".write(toFile: broken + "/config.json", atomically: true, encoding: .utf8)
        assertCleanFailure(try Lora.run(["forward", "--base", broken, "--ids", "1,2", "--out", out]), mentions: "config.json")
        try (config.replacingOccurrences(of: "\"llama\"", with: "\"gpt2\"")).write(toFile: broken + "/config.json", atomically: true, encoding: .utf8)
        assertCleanFailure(try Lora.run(["forward", "--base", broken, "--ids", "1,2", "--out", out]), mentions: "gpt2")
        // Corrupt tokenizer.model with --text.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: broken + "/tokenizer.model"))
        try FileManager.default.removeItem(atPath: broken + "/config.json")
        try FileManager.default.copyItem(atPath: gqa + "/config.json", toPath: broken + "/config.json")
        assertCleanFailure(try Lora.run(["forward", "--base", broken, "--text", "hi", "--out", out]),
                           mentions: "tokenizer.model")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a failed run left an output file")
    }
}
