import Foundation
import XCTest
import Tensors
@testable import InstructionTuning

final class DataLoadingTests: DataTestCase {
    // MARK: formats

    func testLoadsJSONArrayWithOptionalInputAndExtraFields() throws {
        let file = try write("data.json", """
            [
              {"instruction": "Name a color.", "output": "Red.", "id": 7, "meta": {"source": "x"}},
              {"instruction": "Add.", "input": "2 and 3", "output": "5"},
              {"instruction": "Say \\"hi\\" — ok?", "input": "", "output": "Hi\\nthere"}
            ]
            """)
        let records = try InstructionDataset.load(path: file)
        XCTAssertEqual(records, [
            InstructionRecord(instruction: "Name a color.", input: "", output: "Red."),
            InstructionRecord(instruction: "Add.", input: "2 and 3", output: "5"),
            InstructionRecord(instruction: "Say \"hi\" — ok?", input: "", output: "Hi\nthere"),
        ])
    }

    /// mlx-lm's and OpenAI's completion records ({"prompt", "completion"}) and plain text ({"text"}) beside Alpaca's,
    /// in one file; written back, each keeps its form.
    func testLoadsPromptCompletionAndTextRecordsAndWritesThemBack() throws {
        let file = try write("forms.jsonl", """
            {"prompt": "Q: 2+2?\\nA:", "completion": " 4", "family": "sum"}
            {"text": "Once upon a time."}
            {"instruction": "Add.", "input": "2 and 3", "output": "5", "prompt": "ignored: the Alpaca form wins"}
            {"prompt": "", "completion": "x"}
            """)
        let records = try InstructionDataset.load(path: file)
        XCTAssertEqual(records, [
            InstructionRecord(prompt: "Q: 2+2?\nA:", completion: " 4", labels: ["family": "sum"]),
            InstructionRecord(prompt: "", completion: "Once upon a time."),
            InstructionRecord(instruction: "Add.", input: "2 and 3", output: "5"),
            InstructionRecord(prompt: "", completion: "x"),
        ])
        XCTAssertEqual(PromptTemplate.alpaca.prompt(for: records[0]), "Q: 2+2?\nA:", "no template around a given prompt")
        XCTAssertEqual(PromptTemplate.alpaca.prompt(for: records[1]), "")
        let copy = directory + "/copy.json"
        try InstructionDataset.write(records, to: copy)
        XCTAssertEqual(try InstructionDataset.load(path: copy).map(\.rawPrompt), records.map(\.rawPrompt))
        XCTAssertEqual(try InstructionDataset.load(path: copy).map(\.output), records.map(\.output))
        let written = try String(contentsOfFile: copy, encoding: .utf8)
        XCTAssertTrue(written.contains("\"completion\"") && written.contains("\"text\"") && written.contains("\"instruction\""))

        assertError(try InstructionDataset.load(path: try write("p.jsonl", "{\"prompt\": \"a\"}\n")),
                    contains: ["record 1 (line 1) has no \"completion\" field"])
        assertError(try InstructionDataset.load(path: try write("c.json", "[{\"completion\": \"a\"}]")),
                    contains: ["record 1 has no \"prompt\" field"])
        assertError(try InstructionDataset.load(path: try write("t.jsonl", "{\"text\": 5}\n")),
                    contains: ["record 1 (line 1): field \"text\" is a number, not a string"])
        assertError(try InstructionDataset.load(path: try write("none.jsonl", "{\"question\": \"a\", \"answer\": \"b\"}\n")),
                    contains: ["record 1 (line 1) has none of the fields of a record: \"instruction\" and \"output\" (and \"input\"), \"prompt\" and \"completion\", \"text\", or \"messages\""])
    }

    /// Conversation records ({"messages": [{"role", "content"}]}, OpenAI's and mlx-lm's chat data) beside the other
    /// forms; written back as conversations; every way a conversation can be malformed is one clear error.
    func testLoadsConversationRecordsAndWritesThemBack() throws {
        let file = try write("chat.jsonl", """
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], "family": "greet"}
            {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]}
            {"prompt": "Q:", "completion": " A"}
            """)
        let records = try InstructionDataset.load(path: file)
        XCTAssertEqual(records.count, 3)
        XCTAssertEqual(records[0].messages, [ChatMessage(role: .system, content: "Be brief."),
                                             ChatMessage(role: .user, content: "Hi"),
                                             ChatMessage(role: .assistant, content: "Hello.")])
        XCTAssertEqual(records[0].labels, ["family": "greet"])
        XCTAssertEqual(records[1].instruction, "and 3+3?", "the last user message")
        XCTAssertEqual(records[1].output, "6", "the last assistant message is the answer evaluation compares with")
        XCTAssertNil(records[2].messages)
        let copy = directory + "/copy.json"
        try InstructionDataset.write(records, to: copy)
        XCTAssertEqual(try InstructionDataset.load(path: copy).map(\.messages), records.map(\.messages))

        func line(_ messages: String) throws -> String { try write("bad.jsonl", "{\"messages\": \(messages)}\n") }
        let cases: [(String, String)] = [
            ("\"hi\"", "record 1 (line 1): \"messages\" is a string, not an array of {\"role\", \"content\"} objects"),
            ("[5]", "record 1 (line 1), message 1 is a number, not a {\"role\", \"content\"} object"),
            ("[{\"content\": \"x\"}]", "record 1 (line 1), message 1 has no \"role\""),
            ("[{\"role\": \"tool\", \"content\": \"x\"}]", "record 1 (line 1), message 1: role \"tool\" is not one of system, user, assistant"),
            ("[{\"role\": 3, \"content\": \"x\"}]", "message 1: \"role\" is a number, not a string"),
            ("[{\"role\": \"user\"}]", "record 1 (line 1), message 1 has no \"content\""),
            ("[{\"role\": \"user\", \"content\": [\"x\"]}]", "message 1: \"content\" is an array, not a string"),
            ("[{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"system\", \"content\": \"b\"}]",
             "message 2 is a system message; a system message may only come first"),
            ("[{\"role\": \"assistant\", \"content\": \"a\"}]", "record 1 (line 1): the conversation has no user message"),
            ("[{\"role\": \"user\", \"content\": \"a\"}]", "the conversation must end with an assistant message (the answer to learn), ends with a user message"),
            ("[]", "the conversation has no user message"),
        ]
        for (messages, expected) in cases {
            assertError(try InstructionDataset.load(path: try line(messages)), contains: [expected])
        }
    }

    func testLoadsJSONLWithBlankLinesAndCRLF() throws {
        let file = try write("data.jsonl",
            "\n  {\"instruction\": \"a\", \"output\": \"b\"}\r\n\r\n\t\n{\"output\": \"d\", \"instruction\": \"c\", \"input\": \"x\", \"n\": null}\n\n")
        XCTAssertEqual(try InstructionDataset.load(path: file), [
            InstructionRecord(instruction: "a", output: "b"),
            InstructionRecord(instruction: "c", input: "x", output: "d"),
        ])
    }

    func testLoadsArrayAfterByteOrderMarkAndLeadingWhitespace() throws {
        let file = try write("bom.json", bytes: [0xEF, 0xBB, 0xBF] + Array(" \n[{\"instruction\": \"é\", \"output\": \"ü\"}]".utf8))
        XCTAssertEqual(try InstructionDataset.load(path: file), [InstructionRecord(instruction: "é", output: "ü")])
    }

    func testLoadsTwoMegabyteInstruction() throws {
        let big = String(repeating: "the quick brown fox — ", count: 2_100_000 / 24) + "end"
        XCTAssertGreaterThan(big.utf8.count, 2_000_000)
        let array = try write("big.json", "[{\"instruction\": \"\(big)\", \"output\": \"ok\"},\n {\"instruction\": \"s\", \"output\": \"t\"}]")
        let lines = try write("big.jsonl", "{\"instruction\": \"s\", \"output\": \"t\"}\n{\"instruction\": \"\(big)\", \"output\": \"ok\"}\n")
        let fromArray = try InstructionDataset.load(path: array)
        XCTAssertEqual(fromArray.count, 2)
        XCTAssertEqual(fromArray[0].instruction, big)
        let fromLines = try InstructionDataset.load(path: lines)
        XCTAssertEqual(fromLines.map(\.instruction), ["s", big])
        // An error after the big record still names the right line and column.
        let broken = try write("big-broken.jsonl", "{\"instruction\": \"\(big)\", \"output\": \"ok\"}\n{\"instruction\": \"x\", output}\n")
        assertError(try InstructionDataset.load(path: broken), contains: ["line 2, column 22"])
    }

    // MARK: file errors

    func testMissingFileAndDirectory() throws {
        assertError(try InstructionDataset.load(path: directory + "/nope.json"),
                    contains: [directory + "/nope.json: ", "no such dataset file"])
        assertError(try InstructionDataset.load(path: directory), contains: [directory + ": ", "is a directory"])
    }

    func testUnreadableFile() throws {
        try XCTSkipIf(geteuid() == 0, "root reads files whatever their mode")
        let file = try write("secret.json", "[]")
        chmod(file, 0)
        assertError(try InstructionDataset.load(path: file), contains: [file, "cannot read the dataset file"])
    }

    // MARK: UTF-8

    func testInvalidUTF8NamesByteOffsetAndLine() throws {
        var bytes = Array("[\n {\"instruction\": \"ab".utf8)
        let offset = bytes.count
        bytes += [0xFF] + Array("c\", \"output\": \"d\"}\n]".utf8)
        let file = try write("latin.json", bytes: bytes)
        assertError(try InstructionDataset.load(path: file),
                    contains: [file, "not UTF-8", "0xFF", "byte offset \(offset)", "line 2, column 21"])
    }

    func testInvalidUTF8SequencesAreRejected() throws {
        // Latin-1 é, an overlong '/', a UTF-16 surrogate, a code point above U+10FFFF, a lone continuation
        // byte, and a sequence cut by the end of the file: each is refused at the offset of its first byte.
        let cases: [[UInt8]] = [[0xE9, 0x74], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0x80],
                                [0xE2, 0x82]]
        for (n, bad) in cases.enumerated() {
            let prefix = Array("{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"".utf8)
            let tail: [UInt8] = n == cases.count - 1 ? [] : Array("\", \"output\": \"z\"}\n".utf8)
            let file = try write("bad\(n).jsonl", bytes: prefix + bad + tail)
            assertError(try InstructionDataset.load(path: file),
                        contains: ["not UTF-8", "byte offset \(prefix.count)", "line 2, column 18"])
        }
        // Well-formed multi-byte text of every length passes.
        let good = try write("good.jsonl", "{\"instruction\": \"é € 𝄞 \u{10FFFF}\", \"output\": \"y\"}")
        XCTAssertEqual(try InstructionDataset.load(path: good).first?.instruction, "é € 𝄞 \u{10FFFF}")
    }

    func testUTF16FileIsRefused() throws {
        var bytes: [UInt8] = []
        for unit in "[{\"instruction\": \"a\", \"output\": \"b\"}]".utf16 { bytes += [UInt8(unit & 0xFF), UInt8(unit >> 8)] }
        let file = try write("utf16.json", bytes: bytes)
        assertError(try InstructionDataset.load(path: file), contains: [file, "NUL byte at byte offset 1", "UTF-8"])
    }

    // MARK: malformed JSON

    func testMalformedArrayNamesLineAndColumn() throws {
        let file = try write("bad.json", "[\n  {\"instruction\": \"é\", \"output\": \"b\"},\n  {\"instruction\": \"é\", \"output\": x}\n]")
        assertError(try InstructionDataset.load(path: file),
                    contains: [file + ": ", "malformed JSON at line 3, column 34", "invalid value"])
    }

    func testTruncatedArrayPointsAtTheEnd() throws {
        let file = try write("cut.json", "[\n  {\"instruction\": \"a\",\n   \"output\": \"b\"")
        assertError(try InstructionDataset.load(path: file), contains: ["malformed JSON at line 3, column 17", "end of file"])
    }

    func testJSONLWithOneBrokenLine() throws {
        let other = try write("broken2.jsonl", """
            {"instruction": "a", "output": "b"}

            {"instruction": "c" "output": "d"}
            {"instruction": "e", "output": "f"}
            """)
        assertError(try InstructionDataset.load(path: other),
                    contains: [other + ": ", "malformed JSON at line 3, column 21", "one JSON object per line"])
    }

    func testLoneSurrogateEscapeIsLocated() throws {
        let file = try write("surrogate.jsonl", #"""
            {"instruction": "\\ud800 is text, \ud83d\ude00 a pair", "output": "b"}
            {"instruction": "a", "output": "é \ud800 x"}
            """#)
        assertError(try InstructionDataset.load(path: file),
                    contains: ["malformed JSON at line 2, column 35", "surrogate pair, without its other half"])
        let good = try write("pair.jsonl", #"{"instruction": "\\ud800 \ud83d\ude00", "output": "b"}"#)
        XCTAssertEqual(try InstructionDataset.load(path: good).first?.instruction, "\\ud800 😀")
    }

    func testPrettyPrintedSingleObjectIsExplained() throws {
        let file = try write("object.json", "{\n  \"instruction\": \"a\",\n  \"output\": \"b\"\n}\n")
        assertError(try InstructionDataset.load(path: file), contains: [file, "one JSON object spread over several lines"])
    }

    // MARK: records

    func testRecordThatIsNotAnObject() throws {
        let array = try write("a.json", "[{\"instruction\": \"a\", \"output\": \"b\"}, 5]")
        assertError(try InstructionDataset.load(path: array), contains: [array, "record 2 is a number, not an object"])
        let lines = try write("a.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n\n[\"x\"]\n")
        assertError(try InstructionDataset.load(path: lines), contains: [lines, "record 2 (line 3) is an array, not an object"])
        let string = try write("s.jsonl", "\"just text\"\n")
        assertError(try InstructionDataset.load(path: string), contains: ["record 1 (line 1) is a string"])
    }

    func testMissingFields() throws {
        let noInstruction = try write("n.json", "[{\"instruction\": \"a\", \"output\": \"b\"}, {\"output\": \"b\"}]")
        assertError(try InstructionDataset.load(path: noInstruction), contains: [noInstruction, "record 2 has no \"instruction\" field"])
        let noOutput = try write("o.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\", \"response\": \"b\"}")
        assertError(try InstructionDataset.load(path: noOutput), contains: [noOutput, "record 2 (line 2) has no \"output\" field"])
    }

    func testNonStringFields() throws {
        let cases: [(String, String)] = [
            ("{\"instruction\": \"a\", \"output\": 5}", "field \"output\" is a number, not a string"),
            ("{\"instruction\": true, \"output\": \"b\"}", "field \"instruction\" is a boolean, not a string"),
            ("{\"instruction\": \"a\", \"input\": null, \"output\": \"b\"}", "field \"input\" is null, not a string"),
            ("{\"instruction\": \"a\", \"input\": [\"x\"], \"output\": \"b\"}", "field \"input\" is an array, not a string"),
            ("{\"instruction\": {\"t\": 1}, \"output\": \"b\"}", "field \"instruction\" is an object, not a string"),
            ("{\"instruction\": \"a\", \"output\": 2.5}", "field \"output\" is a number, not a string"),
        ]
        for (n, (record, message)) in cases.enumerated() {
            let array = try write("t\(n).json", "[{\"instruction\": \"ok\", \"output\": \"ok\"}, \(record)]")
            assertError(try InstructionDataset.load(path: array), contains: [array, "record 2: " + message])
            let lines = try write("t\(n).jsonl", "{\"instruction\": \"ok\", \"output\": \"ok\"}\n\n\(record)\n")
            assertError(try InstructionDataset.load(path: lines), contains: [lines, "record 2 (line 3): " + message])
        }
    }

    func testEmptyDatasets() throws {
        for (name, text, reason) in [("empty.json", "", "the file is empty"), ("blank.jsonl", " \n\t\r\n", "the file is empty"),
                                     ("array.json", " [ ] ", "the JSON array is empty")] {
            let file = try write(name, text)
            assertError(try InstructionDataset.load(path: file), contains: [file + ": no records", reason])
        }
    }

    // MARK: robustness

    /// Random damage to a valid file — flipped bytes, cuts — gives records or a LoRAKitError, never a crash.
    func testDamagedFilesNeverCrash() throws {
        let text = Array("[\n {\"instruction\": \"Add é\", \"input\": \"2 and 3\", \"output\": \"5\"},\n {\"instruction\": \"b\", \"output\": \"€\"}\n]".utf8)
        let lines = Array("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"😀\", \"input\": \"\", \"output\": \"d\"}\n".utf8)
        var rng = RandomGenerator(seed: 42)
        let alphabet = Array("[]{}\",:\\ \n0123456789eE+-.tfnul".utf8) + [0x00, 0x80, 0xC3, 0xE2, 0xF0, 0xFF]
        var outcomes = (loaded: 0, refused: 0)
        for trial in 0..<600 {
            var bytes = trial % 2 == 0 ? text : lines
            switch trial % 3 {
            case 0: bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1))))
            case 1:
                for _ in 0..<(1 + Int(rng.next() % 3)) {
                    bytes[Int(rng.next() % UInt64(bytes.count))] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                }
            default:
                bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: Int(rng.next() % UInt64(bytes.count)))
            }
            let file = try write("fuzz.json", bytes: bytes)
            do {
                _ = try InstructionDataset.load(path: file)
                outcomes.loaded += 1
            } catch let error as LoRAKitError {
                XCTAssertTrue(error.message.hasPrefix(file + ": "), error.message)
                outcomes.refused += 1
            }
        }
        XCTAssertGreaterThan(outcomes.refused, 100)
        XCTAssertGreaterThan(outcomes.loaded, 10)
    }

    func testNestingAndHugeNumbersAreErrorsNotCrashes() throws {
        let deep = try write("deep.json", String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000))
        assertError(try InstructionDataset.load(path: deep), contains: [deep + ": "])
        let huge = try write("huge.json", "[{\"instruction\": \"a\", \"output\": 1e999}]")
        assertError(try InstructionDataset.load(path: huge), contains: [huge + ": ", "malformed JSON"])
    }
}
