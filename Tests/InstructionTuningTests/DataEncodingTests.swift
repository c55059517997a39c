import Foundation
import XCTest
import MiniGPT
import Tensors
import Tokenizer
@testable import InstructionTuning

final class DataEncodingTests: DataTestCase {
    let records = [
        InstructionRecord(instruction: "Say hello.", output: "Hello there!"),
        InstructionRecord(instruction: "Add the two numbers.", input: "2 and 3", output: "The sum is 5."),
    ]

    func tokenizer() throws -> SentencePieceTokenizer {
        let path = DataFixtures.path("tokenizer/unigram.model")
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), "fixture \(path)")
        return try SentencePieceTokenizer(modelPath: path)
    }

    func testIdsLayoutAndPromptLength() throws {
        let tokenizer = try tokenizer()
        let encoder = ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096)
        let result = try encoder.encode(records)
        XCTAssertEqual(result.truncated, 0)
        XCTAssertEqual(result.skipped, 0)
        XCTAssertEqual(result.examples.count, 2)
        for (record, example) in zip(records, result.examples) {
            let prompt = try tokenizer.encode(PromptTemplate.alpaca.prompt(instruction: record.instruction, input: record.input))
            let output = try tokenizer.encode(record.output)
            XCTAssertFalse(prompt.isEmpty)
            XCTAssertFalse(output.isEmpty)
            XCTAssertEqual(example.ids, [1] + prompt + output + [2])
            XCTAssertEqual(example.promptLength, 1 + prompt.count)
            XCTAssertEqual(example.targetCount(maskPrompt: true), output.count + 1)
            XCTAssertEqual(example.targetCount(maskPrompt: false), example.ids.count - 1)
            XCTAssertEqual(try tokenizer.decode(Array(example.ids[example.promptLength...])), record.output)
        }
        // The ids given to the encoder win over the tokenizer's.
        let custom = ExampleEncoder(tokenizer: tokenizer, bosId: 3, eosId: 4, maxSeqLen: 4096)
        let example = try custom.encode([records[0]]).examples[0]
        XCTAssertEqual(example.ids.first, 3)
        XCTAssertEqual(example.ids.last, 4)
    }

    /// A prompt/completion record is [BOS] + prompt + completion + [EOS] with no template; a text record has an
    /// empty prompt, so every token after BOS carries a loss.
    func testPromptCompletionAndTextRecordsSkipTheTemplate() throws {
        let tokenizer = try tokenizer()
        let encoder = ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096)
        let examples = try encoder.encode([InstructionRecord(prompt: "Q: say hello", completion: " Hello there!"),
                                           InstructionRecord(prompt: "", completion: "Hello there!")]).examples
        let prompt = try tokenizer.encode("Q: say hello"), completion = try tokenizer.encode(" Hello there!")
        XCTAssertEqual(examples[0].ids, [1] + prompt + completion + [2])
        XCTAssertEqual(examples[0].promptLength, 1 + prompt.count)
        XCTAssertEqual(examples[1].ids, try [1] + tokenizer.encode("Hello there!") + [2])
        XCTAssertEqual(examples[1].promptLength, 1)
        XCTAssertEqual(examples[1].targetCount(maskPrompt: true), examples[1].ids.count - 1)
    }

    /// A conversation in the llama2 template: one BOS per turn, the system message inside the first turn, every
    /// assistant message and its EOS learned, nothing else; in the zephyr template and a template file: role
    /// headers, EOS after each message. Truncation keeps the learned ranges inside the ids; the batch's targets are
    /// exactly the learned tokens; the evaluation prompt ends where the last answer starts.
    func testConversationLearnsEveryAssistantMessage() throws {
        let tokenizer = try tokenizer()
        var encoder = ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096)
        let conversation = InstructionRecord(messages: [
            ChatMessage(role: .system, content: "Be brief."), ChatMessage(role: .user, content: "Say hello."),
            ChatMessage(role: .assistant, content: "Hello there!"), ChatMessage(role: .user, content: "Add 2 and 3."),
            ChatMessage(role: .assistant, content: "The sum is 5."),
        ])
        let e = tokenizer.encode
        let turn1 = try e("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nSay hello. [/INST]"), answer1 = try e("Hello there!")
        let turn2 = try e("[INST] Add 2 and 3. [/INST]"), answer2 = try e("The sum is 5.")
        let llama = try encoder.encode([conversation]).examples[0]
        XCTAssertEqual(llama.ids, [1] + turn1 + answer1 + [2] + [1] + turn2 + answer2 + [2])
        let first = 1 + turn1.count, second = first + answer1.count + 2 + turn2.count
        XCTAssertEqual(llama.learnedRanges, [first..<(first + answer1.count + 1), second..<(second + answer2.count + 1)])
        XCTAssertEqual(llama.promptLength, first)
        XCTAssertEqual(llama.targetCount(maskPrompt: true), answer1.count + answer2.count + 2)
        XCTAssertEqual(try encoder.promptIDs(for: conversation), [1] + turn1 + answer1 + [2] + [1] + turn2)

        let batch = Batcher.makeTokenBatch([llama], maskPrompt: true)
        let learned = batch.targets.enumerated().filter { $0.element >= 0 }.map { $0.offset + 1 }
        XCTAssertEqual(learned, Array(llama.learnedRanges![0]) + Array(llama.learnedRanges![1]))
        XCTAssertEqual(Batcher.makeTokenBatch([llama], maskPrompt: false).targets.filter { $0 >= 0 }.count, llama.ids.count - 1)

        encoder.chatTemplate = .zephyr
        let zephyr = try encoder.encode([conversation]).examples[0]
        let header = { (role: String, newline: Bool) in try e((newline ? "\n" : "") ) + e("<|\(role)|>\n") }
        XCTAssertEqual(zephyr.ids, try [1] + e("<|system|>\n") + e("Be brief.") + [2] + header("user", true) + e("Say hello.") + [2]
                       + header("assistant", true) + answer1 + [2] + header("user", true) + e("Add 2 and 3.") + [2]
                       + header("assistant", true) + answer2 + [2])
        XCTAssertEqual(zephyr.learnedRanges?.count, 2)
        XCTAssertEqual(zephyr.targetCount(maskPrompt: true), answer1.count + answer2.count + 2)
        XCTAssertEqual(Array(try encoder.promptIDs(for: conversation).suffix(header("assistant", true).count)), try header("assistant", true))

        // mistral: one BOS, [INST] turns, no system message.
        encoder.chatTemplate = .mistral
        let noSystem = InstructionRecord(messages: Array(conversation.messages!.dropFirst()))
        XCTAssertEqual(try encoder.encode([noSystem]).examples[0].ids,
                       try [1] + e("[INST] ") + e("Say hello. [/INST]") + answer1 + [2] + e("[INST] ") + e("Add 2 and 3. [/INST]") + answer2 + [2])
        assertError(try encoder.encode([conversation]), contains: ["record 1: the chat template mistral has no \"system\" text"])

        // A template file; truncation inside the second answer keeps what fits of it.
        let file = try write("chat.json", #"{"user": "U: {content}", "assistant": "A: {content}", "separator": "\n"}"#)
        encoder.chatTemplate = try ChatTemplate.named(file)
        assertError(try encoder.encode([conversation]), contains: ["record 1: the chat template", "has no \"system\" text"])
        let plain = InstructionRecord(messages: Array(conversation.messages!.dropFirst()))
        let full = try encoder.encode([plain]).examples[0]
        encoder.maxSeqLen = full.learnedRanges![1].lowerBound + 2
        let cut = try encoder.encode([plain])
        XCTAssertEqual(cut.truncated, 1)
        XCTAssertEqual(cut.examples[0].learnedRanges, [full.learnedRanges![0], full.learnedRanges![1].lowerBound..<encoder.maxSeqLen])
        XCTAssertEqual(cut.examples[0].targetCount(maskPrompt: true), full.learnedRanges![0].count + 2)
    }

    /// What a chat template cannot write is refused before any work, naming the conversation; template files with
    /// something missing or malformed are clear errors.
    func testChatTemplateProblemsAreClearErrors() throws {
        let tokenizer = try tokenizer()
        let encoder = ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096)
        let twoUsers = InstructionRecord(messages: [ChatMessage(role: .user, content: "a"), ChatMessage(role: .user, content: "b"),
                                                    ChatMessage(role: .assistant, content: "c")])
        assertError(try encoder.encode([records[0], twoUsers]),
                    contains: ["record 2: the llama2 chat template needs user and assistant messages alternating", "message 2 is user"])
        assertError(try ChatTemplate.named("vicuna"), contains: ["unknown chat template \"vicuna\": use \"llama2\", \"mistral\", \"zephyr\""])
        let cases: [(String, String)] = [
            (#"["x"]"#, "a chat template is a JSON object"),
            (#"{"user": "{content}"}"#, "the chat template has no \"assistant\" text"),
            (#"{"user": "{content}", "assistant": 3}"#, "the chat template's \"assistant\" is a number, not a string"),
            (#"{"user": "U:", "assistant": "{content}"}"#, "the chat template's \"user\" must hold {content} exactly once, found it 0 times"),
            (#"{"user": "{content}", "assistant": "{content}", "separator": 1}"#, "\"separator\" is a number"),
            (#"{"user": "{content}", "assistant": "{content}", "eos_after_every_message": "yes"}"#, "not true or false"),
            ("{", "malformed JSON"),
        ]
        for (text, expected) in cases {
            assertError(try ChatTemplate.named(try write("t.json", text)), contains: [expected])
        }
    }

    /// `--chat-template auto`: the base's tokenizer_config.json chat template, told by its markers; llama2 when the
    /// base has none; a template LoRAKit does not know, or a malformed file, is a clear error.
    func testAutoChatTemplateComesFromTheBase() throws {
        let base = directory + "/base"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        XCTAssertEqual(try ChatTemplate.resolve("auto", base: base), .llama2, "no tokenizer_config.json")
        func config(_ object: [String: Any]) throws {
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: base + "/tokenizer_config.json"))
        }
        try config(["bos_token": "<s>"])
        XCTAssertEqual(try ChatTemplate.resolve("auto", base: base), .llama2, "no chat_template")
        let jinja = [
            ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '<|user|>\n' + m['content'] + eos_token }}{% elif m['role'] == 'assistant' %}{{ '<|assistant|>\n' + m['content'] + eos_token }}{% endif %}{% endfor %}", ChatTemplate.zephyr),
            ("{{ bos_token + '[INST] <<SYS>>\n' + system + '\n<</SYS>>\n\n' + user + ' [/INST]' }}", .llama2),
            ("{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}", .mistral),
        ]
        for (source, expected) in jinja {
            try config(["chat_template": source])
            XCTAssertEqual(try ChatTemplate.resolve("auto", base: base), expected)
            try config(["chat_template": [["name": "tool_use", "template": "x"], ["name": "default", "template": source]]])
            XCTAssertEqual(try ChatTemplate.resolve("auto", base: base), expected, "the default of several")
        }
        XCTAssertEqual(try ChatTemplate.resolve("zephyr", base: base), .zephyr, "a name wins over the base's")
        try config(["chat_template": "{% for m in messages %}{{ '<|im_start|>' + m['role'] }}{% endfor %}"])
        assertError(try ChatTemplate.resolve("auto", base: base),
                    contains: ["tokenizer_config.json: its chat template is none LoRAKit knows", "give --chat-template"])
        try config(["chat_template": 5])
        assertError(try ChatTemplate.resolve("auto", base: base), contains: ["\"chat_template\" is a number"])
        try Data("{".utf8).write(to: URL(fileURLWithPath: base + "/tokenizer_config.json"))
        assertError(try ChatTemplate.resolve("auto", base: base), contains: ["tokenizer_config.json: malformed JSON"])
    }

    func testTokenBatchPacksTheExamplesAndMasksThePrompt() throws {
        let tokenizer = try tokenizer()
        let examples = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096).encode(records).examples
        let (long, short) = examples[0].ids.count >= examples[1].ids.count ? (examples[0], examples[1]) : (examples[1], examples[0])
        XCTAssertLessThan(short.ids.count, long.ids.count)
        for maskPrompt in [true, false] {
            let batch = Batcher.makeTokenBatch([short, long], maskPrompt: maskPrompt)
            XCTAssertEqual(batch.batch, 2)
            XCTAssertEqual(batch.seqLen, long.ids.count)
            XCTAssertEqual(batch.lengths, [Int32(short.ids.count), Int32(long.ids.count)])
            // No padding: the examples' rows back to back.
            XCTAssertEqual(batch.starts, [0, short.ids.count, short.ids.count + long.ids.count])
            XCTAssertEqual(batch.rows, short.ids.count + long.ids.count)
            XCTAssertEqual(batch.ids.count, batch.rows)
            XCTAssertEqual(batch.positions, (0..<short.ids.count).map(Int32.init) + (0..<long.ids.count).map(Int32.init))
            for (b, example) in [short, long].enumerated() {
                let row = batch.starts[b]
                for i in 0..<example.ids.count {
                    let id = batch.ids[row + i], target = batch.targets[row + i]
                    XCTAssertEqual(id, example.ids[i])
                    let counted = i + 1 < example.ids.count && (!maskPrompt || i + 1 >= example.promptLength)
                    XCTAssertEqual(target, counted ? example.ids[i + 1] : -1, "row \(b) position \(i) mask \(maskPrompt)")
                }
            }
            // Masked: the first target is the first output token, predicted from the prompt's last position.
            if maskPrompt {
                let row = batch.starts[1]  // `long` is the second example
                XCTAssertEqual(batch.targets[row + long.promptLength - 2], -1)
                XCTAssertEqual(batch.targets[row + long.promptLength - 1], long.ids[long.promptLength])
            }
            XCTAssertEqual(batch.targetCount, short.targetCount(maskPrompt: maskPrompt) + long.targetCount(maskPrompt: maskPrompt))
        }
        let encoder = ExampleEncoder(tokenizer: tokenizer, maskPrompt: false, maxSeqLen: 4096)
        XCTAssertEqual(encoder.tokenBatch([short]).targetCount, short.ids.count - 1)
    }

    func testTruncationAndSkipCounts() throws {
        let tokenizer = try tokenizer()
        let full = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 4096).encode(records).examples
        // A limit one token past the shorter prompt: that example keeps one response token, the other keeps none.
        let short = try XCTUnwrap(full.min { $0.promptLength < $1.promptLength })
        let long = try XCTUnwrap(full.max { $0.promptLength < $1.promptLength })
        XCTAssertLessThan(short.promptLength + 1, long.promptLength)
        let limit = short.promptLength + 1
        XCTAssertLessThan(limit, short.ids.count)

        let truncating = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: limit, overflow: .truncate).encode(records)
        XCTAssertEqual(truncating.truncated, 1)
        XCTAssertEqual(truncating.skipped, 1, "the longer prompt fills the limit, so it is skipped")
        XCTAssertEqual(truncating.examples, [EncodedExample(ids: Array(short.ids.prefix(limit)), promptLength: short.promptLength)])
        XCTAssertEqual(truncating.examples[0].targetCount(maskPrompt: true), 1)

        let skipping = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: long.ids.count - 1, overflow: .skip).encode(records)
        XCTAssertEqual(skipping.truncated, 0)
        XCTAssertEqual(skipping.skipped, 1)
        XCTAssertEqual(skipping.examples, [short])

        let exact = try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: long.ids.count, overflow: .skip).encode(records)
        XCTAssertEqual(exact.examples.count, 2, "an example of exactly max-seq-len tokens fits")
        XCTAssertEqual(exact.skipped + exact.truncated, 0)
    }

    func testAllExamplesTooLong() throws {
        let tokenizer = try tokenizer()
        assertError(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 8, overflow: .truncate).encode(records),
                    contains: ["all 2 examples are longer than --max-seq-len 8"])
        assertError(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 8, overflow: .skip).encode(records),
                    contains: ["all 2 examples are longer than --max-seq-len 8"])
        XCTAssertEqual(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 8).encode([]).examples, [])
    }

    func testBadSettings() throws {
        let tokenizer = try tokenizer()
        assertError(try ExampleEncoder(tokenizer: tokenizer, maxSeqLen: 1).encode(records), contains: ["--max-seq-len must be at least 2"])
        assertError(try ExampleEncoder(tokenizer: tokenizer, bosId: 400, maxSeqLen: 64).encode(records),
                    contains: ["unigram.model", "BOS id 400 is outside the vocabulary of 400 pieces"])
        assertError(try ExampleEncoder(tokenizer: tokenizer, eosId: -1, maxSeqLen: 64).encode(records),
                    contains: ["the tokenizer has no EOS id"])
    }

    /// The Swift pipeline (loader, template, encoder) reproduces the ids that Python sentencepiece gave the
    /// PEFT training fixtures (scripts/make_peft_fixtures.py), whose prompt_length excludes BOS.
    func testReproducesPythonEncodingOfTrainingFixtures() throws {
        for name in ["train3", "train3-wd"] {
            let directory = DataFixtures.path("peft/\(name)")
            let encodedPath = directory + "/encoded.json"
            guard FileManager.default.fileExists(atPath: encodedPath) else {
                XCTFail("missing fixture \(encodedPath)")
                continue
            }
            let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: encodedPath))) as? [[String: Any]])
            let tokenizer = try SentencePieceTokenizer(modelPath: DataFixtures.path("models/gqa/tokenizer.model"))
            let records = try InstructionDataset.load(path: directory + "/data.json")
            let result = try ExampleEncoder(tokenizer: tokenizer, template: .alpaca, bosId: 1, eosId: 2, maxSeqLen: 100_000)
                .encode(records)
            XCTAssertEqual(result.examples.count, expected.count, name)
            for (n, (example, want)) in zip(result.examples, expected).enumerated() {
                let ids = try XCTUnwrap(want["ids"] as? [Int]).map(Int32.init)
                let promptLength = try XCTUnwrap(want["prompt_length"] as? Int)
                let targets = try XCTUnwrap(want["targets"] as? Int)
                XCTAssertEqual(example.ids, ids, "\(name) record \(n + 1)")
                XCTAssertEqual(example.promptLength, promptLength + 1, "\(name) record \(n + 1)")
                XCTAssertEqual(example.targetCount(maskPrompt: true), targets, "\(name) record \(n + 1)")
            }
            // command.txt: one batch of all 4 records carries 28 targets.
            XCTAssertEqual(Batcher.makeTokenBatch(result.examples, maskPrompt: true).targetCount,
                           expected.compactMap { $0["targets"] as? Int }.reduce(0, +))
        }
    }
}
