import Checkpoints
import Foundation
import XCTest

/// One bad input and the answer `lora` must give: a clean failure (exit 1..127, no signal, the message on stderr)
/// that mentions `needle`, and nothing written where the command would have written.
///
/// Every case has an id that docs/bad-inputs.md lists; `testTheTableListsEveryCase` keeps the two in step.
struct HostileCase {
    var id: String
    var arguments: [String]
    var needle: String
}

/// Files and directories of every kind a user could hand `lora` by mistake or malice, run through the real
/// executable. The library-level tests check the messages in detail; these check that the whole tool answers
/// each with a clean error.
final class HostileInputTests: XCTestCase {
    static let gqa = Lora.fixture("models/gqa")
    static let adapter = Lora.fixture("peft/lora-qv")
    static let data = Lora.fixture("peft/train3/data.json")
    /// Built once: copies of the fixtures with one thing wrong each.
    static var root = ""
    /// Where a failing command would write: must not exist after any case.
    static var out: String { root + "/out" }

    override class func setUp() {
        super.setUp()
        root = (try? Lora.temporaryDirectory()) ?? NSTemporaryDirectory()
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
        super.tearDown()
    }

    // MARK: running

    func check(_ cases: [HostileCase], file: StaticString = #filePath, line: UInt = #line) throws {
        for c in cases {
            let run = try Lora.run(c.arguments)
            if ProcessInfo.processInfo.environment["LORAKIT_PRINT_ANSWERS"] != nil {
                // For docs/bad-inputs.md: the answer each case gets, with the temporary directory cut out.
                let answer = run.stderr.split(separator: "\n").first { $0.hasPrefix("Error:") } ?? ""
                print("ANSWER \(c.id) exit \(run.status): \(answer.replacingOccurrences(of: Self.root + "/", with: ""))")
            }
            assertCleanFailure(run, mentions: c.needle, file: file, line: line)
            // The same verdict once more, naming the case.
            if run.crashed || run.status == 0 || run.status >= 128 || !run.stderr.contains(c.needle)
                || run.stderr.contains("Program crashed") {
                XCTFail("\(c.id): exit \(run.status), stderr: \(run.stderr)", file: file, line: line)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: Self.out), "\(c.id) left \(Self.out) behind", file: file, line: line)
            try? FileManager.default.removeItem(atPath: Self.out)
        }
    }

    func forward(base: String, _ extra: [String] = ["--ids", "1,2"]) -> [String] {
        ["forward", "--base", base, "--out", Self.out] + extra
    }

    func finetune(data: String = HostileInputTests.data, _ extra: [String] = []) -> [String] {
        ["finetune", "--base", Self.gqa, "--data", data, "--out", Self.out, "--steps", "1", "--threads", "1"] + extra
    }

    // MARK: building bad files

    func path(_ name: String) -> String { Self.root + "/" + name }

    @discardableResult
    func write(_ name: String, _ bytes: Data) throws -> String {
        let file = path(name)
        try FileManager.default.createDirectory(at: URL(fileURLWithPath: file).deletingLastPathComponent(),
                                                withIntermediateDirectories: true)
        try bytes.write(to: URL(fileURLWithPath: file))
        return file
    }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String { try write(name, Data(text.utf8)) }

    /// A copy of the directory `source` called `name`, changed by `edit`.
    func copy(_ source: String, as name: String, _ edit: (String) throws -> Void = { _ in }) throws -> String {
        let directory = path(name)
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.copyItem(atPath: source, toPath: directory)
        try edit(directory)
        return directory
    }

    /// A copy of the gqa model whose config.json has `changes` applied (nil removes a key).
    func model(_ name: String, config changes: [String: Any?]) throws -> String {
        try copy(Self.gqa, as: name) { directory in
            let file = directory + "/config.json"
            var config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
            for (key, value) in changes { config[key] = value ?? nil }
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: file))
        }
    }

    /// A copy of the lora-qv adapter whose adapter_config.json has `changes` applied.
    func adapter(_ name: String, config changes: [String: Any]) throws -> String {
        try copy(Self.adapter, as: name) { directory in
            let file = directory + "/adapter_config.json"
            var config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
            for (key, value) in changes { config[key] = value }
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: file))
        }
    }

    /// The parts of a safetensors file: its header object and its data section.
    func safetensors(_ file: String) throws -> (header: [String: Any], data: Data) {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        let length = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + length))) as? [String: Any])
        return (header, bytes.subdata(in: (8 + length)..<bytes.count))
    }

    /// Safetensors bytes from a header object and data, with the header length `lyingLength` if given.
    func safetensorsBytes(header: Any, data: Data, lyingLength: UInt64? = nil) throws -> Data {
        let json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .fragmentsAllowed])
        var length = (lyingLength ?? UInt64(json.count)).littleEndian
        return Data(bytes: &length, count: 8) + json + data
    }

    /// A copy of `source` (a model or adapter directory) whose `file` has its header changed by `edit`.
    func tensors(_ source: String, as name: String, file: String, lyingLength: UInt64? = nil,
                 _ edit: (inout [String: Any], inout Data) throws -> Void = { _, _ in }) throws -> String {
        try copy(source, as: name) { directory in
            var (header, data) = try safetensors(directory + "/" + file)
            try edit(&header, &data)
            try safetensorsBytes(header: header, data: data, lyingLength: lyingLength)
                .write(to: URL(fileURLWithPath: directory + "/" + file))
        }
    }

    /// Changes one field of tensor `name` in a header.
    func set(_ header: inout [String: Any], _ name: String, _ key: String, _ value: Any) {
        var entry = header[name] as? [String: Any] ?? [:]
        entry[key] = value
        header[name] = entry
    }

    // MARK: the cases

    /// The base model directory: config.json, model.safetensors (its header above all), tokenizer.model.
    func modelCases() throws -> [HostileCase] {
        let gqa = Self.gqa
        let weights = try Data(contentsOf: URL(fileURLWithPath: gqa + "/model.safetensors"))
        let embed = "model.embed_tokens.weight", q0 = "model.layers.0.self_attn.q_proj.weight"
        return [
            HostileCase(id: "M01", arguments: forward(base: path("no-such-model")), needle: "no such model directory"),
            HostileCase(id: "M02", arguments: forward(base: try write("model-is-a-file", "x")), needle: "model-is-a-file"),
            HostileCase(id: "M03", arguments: forward(base: try copy(gqa, as: "no-config") { try FileManager.default.removeItem(atPath: $0 + "/config.json") }),
                        needle: "config.json"),
            HostileCase(id: "M04", arguments: forward(base: try copy(gqa, as: "config-not-json") { try Data("{ not json".utf8).write(to: URL(fileURLWithPath: $0 + "/config.json")) }),
                        needle: "is not valid JSON"),
            HostileCase(id: "M05", arguments: forward(base: try copy(gqa, as: "config-array") { try Data("[1, 2]".utf8).write(to: URL(fileURLWithPath: $0 + "/config.json")) }),
                        needle: "is not a JSON object"),
            HostileCase(id: "M06", arguments: forward(base: try model("gpt2", config: ["model_type": "gpt2"])), needle: "\"gpt2\""),
            HostileCase(id: "M07", arguments: forward(base: try model("rope-linear", config: ["rope_parameters": ["rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0]])),
                        needle: "unsupported rope scaling"),
            HostileCase(id: "M08", arguments: forward(base: try model("hidden-lies", config: ["hidden_size": 40, "head_dim": 10])), needle: "shape"),
            HostileCase(id: "M09", arguments: forward(base: try model("no-layers", config: ["num_hidden_layers": 0])), needle: "num_hidden_layers is 0"),
            HostileCase(id: "M10", arguments: forward(base: try model("kv-heads", config: ["num_key_value_heads": 3])), needle: "not divisible"),
            HostileCase(id: "M11", arguments: forward(base: try model("head-dim-overflow", config: ["head_dim": 1 << 62, "num_key_value_heads": 4])),
                        needle: "too large to address"),
            HostileCase(id: "M12", arguments: forward(base: try model("positions", config: ["max_position_embeddings": 1 << 50])), needle: "RoPE table"),
            HostileCase(id: "M13", arguments: forward(base: try model("eos", config: ["eos_token_id": 320])), needle: "outside the vocabulary"),
            HostileCase(id: "M14", arguments: forward(base: try model("string-size", config: ["hidden_size": "32"])), needle: "wrong type"),
            HostileCase(id: "M15", arguments: forward(base: try copy(gqa, as: "no-weights") { try FileManager.default.removeItem(atPath: $0 + "/model.safetensors") }),
                        needle: "model.safetensors"),
            HostileCase(id: "M16", arguments: forward(base: try copy(gqa, as: "empty-weights") { try Data().write(to: URL(fileURLWithPath: $0 + "/model.safetensors")) }),
                        needle: "too short for a safetensors file"),
            HostileCase(id: "M17", arguments: forward(base: try copy(gqa, as: "half-weights") { try weights.prefix(weights.count / 2).write(to: URL(fileURLWithPath: $0 + "/model.safetensors")) }),
                        needle: "beyond the end of the data"),
            HostileCase(id: "M18", arguments: forward(base: try copy(gqa, as: "cut-in-header") { try weights.prefix(100).write(to: URL(fileURLWithPath: $0 + "/model.safetensors")) }),
                        needle: "is impossible for a file of 100 bytes"),
            HostileCase(id: "M19", arguments: forward(base: try tensors(gqa, as: "lying-length", file: "model.safetensors", lyingLength: 1 << 40)),
                        needle: "header length 1099511627776 is impossible"),
            HostileCase(id: "M20", arguments: forward(base: try tensors(gqa, as: "short-length", file: "model.safetensors", lyingLength: 10)),
                        needle: "header is not valid JSON"),
            HostileCase(id: "M21", arguments: forward(base: try copy(gqa, as: "header-array") { try safetensorsBytes(header: [1, 2], data: Data()).write(to: URL(fileURLWithPath: $0 + "/model.safetensors")) }),
                        needle: "header is not a JSON object"),
            HostileCase(id: "M22", arguments: forward(base: try tensors(gqa, as: "offsets-beyond", file: "model.safetensors") { header, data in
                            self.set(&header, embed, "data_offsets", [0, data.count + 4])
                        }), needle: "beyond the end of the data"),
            HostileCase(id: "M23", arguments: forward(base: try tensors(gqa, as: "overlap", file: "model.safetensors") { header, _ in
                            let offsets = (header[embed] as? [String: Any])?["data_offsets"] as? [Int] ?? [0, 0]
                            let other = (header[q0] as? [String: Any])?["data_offsets"] as? [Int] ?? [0, 0]
                            // q_proj's range, moved to start inside the embedding's (same size as before).
                            self.set(&header, q0, "data_offsets", [offsets[0] + 4, offsets[0] + 4 + (other[1] - other[0])])
                        }), needle: "overlaps"),
            HostileCase(id: "M24", arguments: forward(base: try tensors(gqa, as: "int64", file: "model.safetensors") { header, _ in
                            self.set(&header, embed, "dtype", "I64")
                        }), needle: "unsupported dtype I64"),
            HostileCase(id: "M25", arguments: forward(base: try tensors(gqa, as: "shape-lies", file: "model.safetensors") { header, _ in
                            self.set(&header, embed, "shape", [320, 33])
                        }), needle: "bytes of data but shape"),
            HostileCase(id: "M26", arguments: forward(base: try tensors(gqa, as: "missing-tensor", file: "model.safetensors") { header, _ in
                            header[q0] = nil
                        }), needle: "missing tensor model.layers.0.self_attn.q_proj.weight"),
            HostileCase(id: "M27", arguments: forward(base: try tensors(gqa, as: "negative-dim", file: "model.safetensors") { header, _ in
                            self.set(&header, embed, "shape", [-320, 32])
                        }), needle: "non-negative integer"),
            HostileCase(id: "M28", arguments: forward(base: try copy(Lora.fixture("models/sharded-bf16"), as: "missing-shard") {
                            try FileManager.default.removeItem(atPath: $0 + "/model-00002-of-00003.safetensors")
                        }), needle: "model-00002-of-00003.safetensors"),
            HostileCase(id: "M29", arguments: forward(base: try copy(gqa, as: "weights-dir") {
                            try FileManager.default.removeItem(atPath: $0 + "/model.safetensors")
                            try FileManager.default.createDirectory(atPath: $0 + "/model.safetensors", withIntermediateDirectories: false)
                        }), needle: "model.safetensors"),
            HostileCase(id: "M30", arguments: forward(base: try copy(gqa, as: "garbage-tokenizer") { try Data("garbage".utf8).write(to: URL(fileURLWithPath: $0 + "/tokenizer.model")) }, ["--text", "hi"]),
                        needle: "tokenizer.model"),
            HostileCase(id: "M31", arguments: forward(base: try copy(gqa, as: "no-tokenizer") { try FileManager.default.removeItem(atPath: $0 + "/tokenizer.model") }, ["--text", "hi"]),
                        needle: "tokenizer.model"),
        ]
    }

    /// Token ids given on the command line.
    func tokenCases() throws -> [HostileCase] {
        [
            HostileCase(id: "I01", arguments: forward(base: Self.gqa, ["--ids", "1,320"]), needle: "outside the vocabulary"),
            HostileCase(id: "I02", arguments: forward(base: Self.gqa, ["--ids=1,-1"]), needle: "outside the vocabulary"),
            HostileCase(id: "I03", arguments: forward(base: Self.gqa, ["--ids", "1,99999999999"]), needle: "is not a token id"),
            HostileCase(id: "I04", arguments: forward(base: Self.gqa, ["--ids", "1,x"]), needle: "'x' is not a token id"),
            HostileCase(id: "I05", arguments: ["tokenizer", "decode", "--model", Self.gqa + "/tokenizer.model", "--ids", "5,100000"],
                        needle: "100000"),
        ]
    }

    /// PEFT adapter directories (`--adapter`, `--init-adapter`).
    func adapterCases() throws -> [HostileCase] {
        let base = forward(base: Self.gqa)
        let qv = Self.adapter
        let a0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        return [
            HostileCase(id: "A01", arguments: base + ["--adapter", path("no-such-adapter")], needle: "adapter directory does not exist"),
            HostileCase(id: "A02", arguments: base + ["--adapter", try write("adapter-is-a-file", "x")], needle: "is a file"),
            HostileCase(id: "A03", arguments: base + ["--adapter", try copy(qv, as: "no-adapter-config") { try FileManager.default.removeItem(atPath: $0 + "/adapter_config.json") }],
                        needle: "adapter_config.json"),
            HostileCase(id: "A04", arguments: base + ["--adapter", try copy(qv, as: "adapter-config-not-json") { try Data("{\"r\": ".utf8).write(to: URL(fileURLWithPath: $0 + "/adapter_config.json")) }],
                        needle: "adapter_config.json"),
            HostileCase(id: "A05", arguments: base + ["--adapter", try adapter("r-lies", config: ["r": 8])], needle: "lora_"),
            HostileCase(id: "A06", arguments: base + ["--adapter", try adapter("foreign-targets", config: ["target_modules": ["c_attn"]])],
                        needle: "'c_attn' matches no module"),
            HostileCase(id: "A07", arguments: base + ["--adapter", try adapter("layer-7", config: ["layers_to_transform": [7]])], needle: "layer 7"),
            HostileCase(id: "A08", arguments: base + ["--adapter", try adapter("dora", config: ["use_dora": true])], needle: "use_dora"),
            HostileCase(id: "A09", arguments: base + ["--adapter", try adapter("rank-0", config: ["r": 0])], needle: "r"),
            HostileCase(id: "A10", arguments: base + ["--adapter", try adapter("not-lora", config: ["peft_type": "PREFIX_TUNING"])], needle: "PREFIX_TUNING"),
            HostileCase(id: "A11", arguments: base + ["--adapter", try copy(qv, as: "adapter-cut") { directory in
                            let file = directory + "/adapter_model.safetensors"
                            let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
                            try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: file))
                        }], needle: "adapter_model.safetensors"),
            HostileCase(id: "A12", arguments: base + ["--adapter", try tensors(qv, as: "adapter-missing-tensor", file: "adapter_model.safetensors") { header, _ in
                            header[a0] = nil
                        }], needle: "q_proj"),
            HostileCase(id: "A13", arguments: base + ["--adapter", try tensors(qv, as: "adapter-lying-length", file: "adapter_model.safetensors", lyingLength: UInt64.max)],
                        needle: "impossible"),
            HostileCase(id: "A14", arguments: forward(base: Lora.fixture("models/headdim")) + ["--adapter", qv], needle: "lora_"),
            HostileCase(id: "A15", arguments: base + ["--adapter", qv + ":heavy"], needle: "heavy"),
            HostileCase(id: "A16", arguments: finetune(["--init-adapter", path("no-such-adapter")]), needle: "no-such-adapter"),
            HostileCase(id: "A17", arguments: base + ["--adapter", try adapter("pissa-unconverted", config: ["init_lora_weights": "pissa"])],
                        needle: "path_initial_model_for_weight_conversion"),
            HostileCase(id: "A18", arguments: base + ["--adapter", try copy(Lora.fixture("dora/dora-mixed"), as: "dora-flag-off") { directory in
                            let file = directory + "/adapter_config.json"
                            var config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
                            config["use_dora"] = false
                            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: file))
                        }], needle: "use_dora: true"),
        ]
    }

    /// Instruction datasets (`--data`, `--val-data`).
    func dataCases() throws -> [HostileCase] {
        let long = String(repeating: "word ", count: 2 * 1024 * 1024 / 5)
        let longRecord = try JSONSerialization.data(withJSONObject: [["instruction": long, "output": "ok"]])
        return [
            HostileCase(id: "D01", arguments: finetune(data: path("no-such-data.json")), needle: "no such dataset file"),
            HostileCase(id: "D02", arguments: finetune(data: Self.root), needle: "a data directory needs train.jsonl or train.json"),
            HostileCase(id: "D03", arguments: finetune(data: try write("empty.json", "")), needle: "no records"),
            HostileCase(id: "D04", arguments: finetune(data: try write("latin1.json", Data("[{\"instruction\": \"caf".utf8) + Data([0xE9]) + Data("\", \"output\": \"x\"}]".utf8))),
                        needle: "not UTF-8 text"),
            HostileCase(id: "D05", arguments: finetune(data: try write("utf16.json", "[{\"instruction\": \"a\", \"output\": \"b\"}]".data(using: .utf16LittleEndian) ?? Data())),
                        needle: "NUL byte"),
            HostileCase(id: "D06", arguments: finetune(data: try write("broken-line.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\", \"output\": }\n{\"instruction\": \"d\", \"output\": \"e\"}\n")),
                        needle: "line 2"),
            HostileCase(id: "D07", arguments: finetune(data: try write("broken-record.json", "[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": }]")),
                        needle: "line 2"),
            HostileCase(id: "D08", arguments: finetune(data: try write("no-output.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\"}\n")),
                        needle: "has no \"output\" field"),
            HostileCase(id: "D09", arguments: finetune(data: try write("number.json", "[{\"instruction\": 5, \"output\": \"b\"}]")), needle: "not a string"),
            HostileCase(id: "D10", arguments: finetune(data: try write("not-object.json", "[\"instruction\"]")), needle: "not an object"),
            HostileCase(id: "D11", arguments: finetune(data: try write("empty-array.json", "[]")), needle: "no records"),
            HostileCase(id: "D12", arguments: finetune(data: try write("pretty-object.json", "{\n  \"instruction\": \"a\",\n  \"output\": \"b\"\n}\n")),
                        needle: "spread over several lines"),
            HostileCase(id: "D13", arguments: finetune(data: try write("deep.json", String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000))),
                        needle: "malformed JSON"),
            HostileCase(id: "D14", arguments: finetune(data: try write("surrogate.json", "[{\"instruction\": \"\\ud800x\", \"output\": \"b\"}]")),
                        needle: "surrogate"),
            HostileCase(id: "D15", arguments: finetune(data: try write("two-megabytes.json", longRecord)), needle: "longer than --max-seq-len"),
            HostileCase(id: "D16", arguments: finetune(["--val-data", try write("bad-val.jsonl", "{\"instruction\": \"a\"\n")]), needle: "bad-val.jsonl"),
            HostileCase(id: "D17", arguments: ["eval", "--base", Self.gqa, "--data", path("broken-line.jsonl"), "--no-generate"], needle: "line 2"),
        ]
    }

    /// Prompt templates (`--template`).
    func templateCases() throws -> [HostileCase] {
        [
            HostileCase(id: "T01", arguments: finetune(["--template", "vicuna"]), needle: "unknown template"),
            HostileCase(id: "T02", arguments: finetune(["--template", try write("t-malformed.json", "{\"prompt_input\": \"{instruction}\",\n \"prompt_no_input\": }")]),
                        needle: "malformed JSON at line 2"),
            HostileCase(id: "T03", arguments: finetune(["--template", try write("t-no-instruction.json", "{\"prompt_input\": \"{input}\", \"prompt_no_input\": \"{instruction}\"}")]),
                        needle: "lacks the {instruction} placeholder"),
            HostileCase(id: "T04", arguments: finetune(["--template", try write("t-input-in-no-input.json", "{\"prompt_input\": \"{instruction} {input}\", \"prompt_no_input\": \"{instruction} {input}\"}")]),
                        needle: "holds {input}"),
            HostileCase(id: "T05", arguments: finetune(["--template", try write("t-array.json", "[\"{instruction}\"]")]), needle: "a template is a JSON object"),
            HostileCase(id: "T06", arguments: finetune(["--template", try write("t-number.json", "{\"prompt_input\": 1, \"prompt_no_input\": \"{instruction}\"}")]),
                        needle: "not a string"),
        ]
    }

    /// Options and output paths.
    func optionCases() throws -> [HostileCase] {
        let existing = try write("existing-out/file", "keep me")
        let regularFile = try write("regular-file", "x")
        // A NaN in a projection: F32 runs on (and yields NaN), NF4 cannot scale its block.
        let nanProjection = try tensors(Self.gqa, as: "nan-projection", file: "model.safetensors") { header, data in
            let entry = try XCTUnwrap(header["model.layers.1.mlp.up_proj.weight"] as? [String: Any])
            let start = try XCTUnwrap((entry["data_offsets"] as? [Int])?.first) + 7 * 4
            var nan = Float.nan.bitPattern.littleEndian
            data.replaceSubrange(start..<(start + 4), with: Data(bytes: &nan, count: 4))
        }
        return [
            HostileCase(id: "O01", arguments: finetune(["--rank", "0"]), needle: "--rank"),
            HostileCase(id: "O02", arguments: finetune(["--rank", "100000000"]), needle: "larger than the model's hidden size"),
            HostileCase(id: "O03", arguments: finetune(["--dropout", "1"]), needle: "--dropout"),
            HostileCase(id: "O04", arguments: finetune(["--targets", "q,banana"]), needle: "banana"),
            HostileCase(id: "O05", arguments: finetune(["--layers", "5"]), needle: "5"),
            HostileCase(id: "O06", arguments: finetune(["--lr-schedule", "exponential"]), needle: "exponential"),
            HostileCase(id: "O07", arguments: finetune(["--max-seq-len", "8", "--skip-long"]), needle: "--max-seq-len"),
            HostileCase(id: "O08", arguments: finetune(["--batch-size", "0"]), needle: "--batch-size"),
            HostileCase(id: "O09", arguments: finetune(["--threads", "0"]), needle: "--threads"),
            HostileCase(id: "O10", arguments: ["finetune", "--base", Self.gqa, "--data", Self.data, "--out", regularFile + "/run", "--steps", "1"],
                        needle: "regular-file"),
            HostileCase(id: "O11", arguments: finetune(["--config", try write("bad.yaml", "rank: [unclosed")]), needle: "bad.yaml"),
            HostileCase(id: "O12", arguments: finetune(["--config", try write("list.yaml", "- 1\n- 2\n")]), needle: "mapping"),
            HostileCase(id: "O13", arguments: ["generate", "--base", Self.gqa, "--instruction", "hi", "--top-p=7"], needle: "--top-p"),
            HostileCase(id: "O14", arguments: ["generate", "--base", Self.gqa, "--instruction", "hi", "--temperature=-2"], needle: "--temperature"),
            // An existing output directory is kept, not replaced.
            HostileCase(id: "O15", arguments: ["finetune", "--base", Self.gqa, "--data", Self.data, "--out", URL(fileURLWithPath: existing).deletingLastPathComponent().path, "--steps", "1"],
                        needle: "--overwrite"),
            HostileCase(id: "O16", arguments: finetune(["--quantize", "int3"]), needle: "choices: none, nf4"),
            HostileCase(id: "O17", arguments: forward(base: nanProjection, ["--ids", "1,2", "--quantize", "nf4"]),
                        needle: "model.layers.1.mlp.up_proj.weight: element 7 is nan"),
            HostileCase(id: "O18", arguments: finetune(["--dora", "--init-adapter", Self.adapter]), needle: "--dora"),
            HostileCase(id: "O19", arguments: finetune(["--init", "pissa", "--init-adapter", Self.adapter]), needle: "--init-adapter"),
            HostileCase(id: "O20", arguments: finetune(["--init", "pissa", "--targets", "v", "--rank", "20"]), needle: "min(in, out)"),
            HostileCase(id: "O21", arguments: ["export-adapter", "--adapter", Lora.fixture("dora/dora-mixed"), "--base", Self.gqa,
                                               "--out", Self.out], needle: "llama.cpp"),
            HostileCase(id: "O22", arguments: finetune(["--adalora", "--rank", "8", "--target-rank", "9"]),
                        needle: "--target-rank 9 must be below --rank 8"),
            HostileCase(id: "O23", arguments: finetune(["--adalora"]), needle: "--adalora needs --target-rank"),
            HostileCase(id: "O24", arguments: finetune(["--adalora", "--target-rank", "2", "--tinit", "3", "--tfinal", "2", "--steps", "4"]),
                        needle: "no budgeting phase"),
            HostileCase(id: "O25", arguments: finetune(["--dora", "--adalora", "--target-rank", "2"]),
                        needle: "--dora and --adalora do not combine"),
            HostileCase(id: "O26", arguments: ["bench", "--dim", "32", "--layers", "2", "--heads", "4", "--hidden", "48",
                                               "--vocab", "101", "--seq", "10", "--batch", "2", "--gemm", "mkl"],
                        needle: "unknown --gemm 'mkl'; choose one of lorakit, openblas"),
            HostileCase(id: "O27", arguments: ["merge", "--base", Self.gqa, "--out", Self.out, "--format", "hf", "--dtype", "q8_0"],
                        needle: "--dtype q8_0 is a llama.cpp (GGUF) type: use --format gguf"),
            HostileCase(id: "O28", arguments: finetune(["--loraplus-lr-ratio", "0"]), needle: "--loraplus-lr-ratio must be positive, got 0"),
            HostileCase(id: "O29", arguments: finetune(["--loraplus-lr-ratio", "16", "--adalora", "--target-rank", "2"]),
                        needle: "--loraplus-lr-ratio does not apply to --adalora"),
            HostileCase(id: "O30", arguments: finetune(["--chat-template", "vicuna"]), needle: "unknown chat template \"vicuna\""),
            HostileCase(id: "O31", arguments: ["bench", "--grad-checkpoint", "--generate", "4"],
                        needle: "--grad-checkpoint goes with training runs"),
        ]
    }

    /// A llama.cpp GGUF file as the base: not GGUF at all, cut short, of another architecture or tokenizer,
    /// missing a hyper-parameter or a tensor, a tensor of a type LoRAKit does not read.
    func ggufCases() throws -> [HostileCase] {
        let fixture = Lora.fixture("gguf-base/model-q4_k_m.gguf")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: fixture))
        let source = try GGUFFile(path: fixture)
        /// An F32 copy of the fixture with its metadata and tensors edited.
        func edited(_ name: String, metadata edit: (inout [(key: String, value: GGUFValue)]) -> Void = { _ in },
                    dropping dropped: String? = nil) throws -> String {
            var metadata = source.keys.compactMap { key in source.metadata[key].map { (key: key, value: $0) } }
            edit(&metadata)
            var writer = GGUFWriter()
            for (key, value) in metadata where key != "general.alignment" { try writer.add(key, value) }
            for info in source.tensors where info.name != dropped {
                try writer.addTensor(info.name, try source.tensor(info.name), type: .f32)
            }
            let file = path(name)
            try writer.write(to: file)
            return file
        }
        func replacing(_ key: String, with value: GGUFValue?) -> (inout [(key: String, value: GGUFValue)]) -> Void {
            return { metadata in
                metadata.removeAll { $0.key == key }
                if let value { metadata.append((key, value)) }
            }
        }
        // the ggml type of blk.0.attn_q.weight's tensor info, set to 16 (IQ2_XXS): the u32 after its name, n_dims
        // (u32) and two dimensions (u64 each)
        var iq2 = bytes
        let name = Data("blk.0.attn_q.weight".utf8)
        let nameEnd = try XCTUnwrap(iq2.range(of: name)).upperBound
        iq2.replaceSubrange(nameEnd + 20..<nameEnd + 24, with: [16, 0, 0, 0])
        // a control token of one character (here "🙂" for </s>): libsentencepiece cannot encode a text holding it
        var tokens = source.metadata["tokenizer.ggml.tokens"]?.elements?.compactMap(\.text) ?? []
        tokens[2] = "🙂"
        let emoji = try edited("control-emoji.gguf", metadata: replacing("tokenizer.ggml.tokens", with: .strings(tokens)))
        let smiles = try write("smiles.json", #"[{"instruction": "Smile", "output": "ok"}, {"instruction": "Smile", "output": "a 🙂"}]"#)
        return [
            HostileCase(id: "G01", arguments: forward(base: try write("notes.gguf", "not a model")),
                        needle: "notes.gguf: is neither a model directory nor a GGUF file"),
            HostileCase(id: "G02", arguments: forward(base: try write("half.gguf", bytes.prefix(bytes.count / 2))),
                        needle: "half.gguf: the offset of tensor"),
            HostileCase(id: "G03", arguments: forward(base: try edited("qwen.gguf", metadata: replacing("general.architecture", with: .string("qwen2")))),
                        needle: "general.architecture is \"qwen2\""),
            HostileCase(id: "G04", arguments: forward(base: try edited("gpt2-vocab.gguf", metadata: replacing("tokenizer.ggml.model", with: .string("gpt2")))),
                        needle: "SentencePiece vocabularies"),
            HostileCase(id: "G05", arguments: forward(base: try edited("no-eps.gguf", metadata: replacing("llama.attention.layer_norm_rms_epsilon", with: nil))),
                        needle: "no metadata key llama.attention.layer_norm_rms_epsilon"),
            HostileCase(id: "G06", arguments: forward(base: try edited("no-ffn-up.gguf", dropping: "blk.1.ffn_up.weight")),
                        needle: "has no tensor blk.1.ffn_up.weight"),
            HostileCase(id: "G07", arguments: forward(base: try edited("few-tokens.gguf", metadata: replacing("tokenizer.ggml.tokens", with: .strings(["<unk>", "<s>", "</s>"])))),
                        needle: "tokenizer.ggml.scores"),
            HostileCase(id: "G08", arguments: forward(base: try write("iq2.gguf", iq2)), needle: "IQ2_XXS"),
            HostileCase(id: "G10", arguments: forward(base: try edited("billion-blocks.gguf", metadata: replacing("llama.block_count", with: .uint32(1_000_000_000)))),
                        needle: "llama.block_count is 1000000000, but the file holds 21 tensors (9 per block)"),
            HostileCase(id: "G14", arguments: forward(base: try copy(Lora.fixture("gguf-base"), as: "gguf-folder")),
                        needle: "gguf-folder: no config.json: not a Hugging Face model directory (it holds model-q4_k_m.gguf: give a GGUF file itself as --base)"),
            HostileCase(id: "G11", arguments: ["tokenizer", "encode", "--model", emoji, "--text", "a 🙂"],
                        needle: "cannot encode the text \"a 🙂\""),
            HostileCase(id: "G12", arguments: ["finetune", "--base", emoji, "--data", smiles, "--out", Self.out, "--steps", "1"],
                        needle: "smiles.json: a record cannot be tokenized: "),
            HostileCase(id: "G13", arguments: ["eval", "--base", emoji, "--data", smiles],
                        needle: "smiles.json: a record cannot be tokenized: "),
            HostileCase(id: "G09", arguments: ["tokenizer", "encode", "--model", try write("notes2.gguf", "GGUF but no more"), "--text", "a"],
                        needle: "notes2.gguf"),
        ]
    }

    // MARK: tests

    func testBadModelDirectories() throws { try check(try modelCases()) }
    func testBadGGUFBases() throws { try check(try ggufCases()) }
    func testBadTokenIds() throws { try check(try tokenCases()) }
    func testBadAdapters() throws { try check(try adapterCases()) }
    func testBadDatasets() throws { try check(try dataCases()) }
    func testBadTemplates() throws { try check(try templateCases()) }

    func testBadOptionsAndOutputPaths() throws {
        try check(try optionCases())
        XCTAssertEqual(try String(contentsOfFile: path("existing-out/file"), encoding: .utf8), "keep me")
    }

    /// A 2 MB instruction among ordinary records is skipped and counted, not fatal.
    func testTwoMegabyteInstructionAmongOthersIsSkippedAndReported() throws {
        var records = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.data))) as? [[String: String]])
        records.append(["instruction": String(repeating: "word ", count: 2 * 1024 * 1024 / 5), "output": "ok"])
        let file = try write("mixed-long.json", try JSONSerialization.data(withJSONObject: records))
        let out = path("mixed-long-run")
        let run = try Lora.run(["finetune", "--base", Self.gqa, "--data", file, "--out", out, "--steps", "1", "--threads", "1"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stderr.contains("4 training examples") && run.stderr.contains("1 skipped"), run.stderr)
    }

    /// The committed fuzzing seeds (the inputs that once crashed among them) go through each fuzz target's own
    /// checks in an ordinary build: `swift test` builds the targets, which then replay the files they are given.
    func testFuzzSeedCorporaReplayWithoutATrap() throws {
        let corpora = Lora.fixtures.deletingLastPathComponent().appendingPathComponent("Fuzz/corpus")
        let targets = ["FuzzSafeTensors": "safetensors", "FuzzModelConfig": "model-config",
                       "FuzzAdapterConfig": "adapter-config", "FuzzDataset": "dataset", "FuzzTemplate": "template",
                       "FuzzGGUF": "gguf"]
        for (target, corpus) in targets.sorted(by: { $0.key < $1.key }) {
            let executable = Lora.executable.deletingLastPathComponent().appendingPathComponent(target)
            let directory = corpora.appendingPathComponent(corpus).path
            let seeds = try FileManager.default.contentsOfDirectory(atPath: directory)
            XCTAssertGreaterThan(seeds.count, 2, corpus)
            let process = Process()
            process.executableURL = executable
            process.arguments = [directory]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            XCTAssertEqual(process.terminationReason, .exit, "\(target) trapped on a seed in \(directory)")
            XCTAssertEqual(process.terminationStatus, 0, target)
        }
    }

    /// docs/bad-inputs.md has a row for every case above (and for the crash-safety cases of ResumeTests).
    func testTheTableListsEveryCase() throws {
        let doc = Lora.fixtures.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/bad-inputs.md")
        let text = try String(contentsOf: doc, encoding: .utf8)
        let rows = Set(text.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("| ") else { return nil }
            let id = line.dropFirst(2).prefix { $0 != " " }
            return id.count == 3 && id.first!.isUppercase ? String(id) : nil
        })
        var ids = [String]()
        for cases in [try modelCases(), try ggufCases(), try tokenCases(), try adapterCases(), try dataCases(), try templateCases(), try optionCases()] {
            ids += cases.map(\.id)
        }
        ids += ["D18"]   // testTwoMegabyteInstructionAmongOthersIsSkippedAndReported
        ids += ["R01", "R02", "R03", "R04", "R05", "R06", "R07", "R08", "R09", "R10"]   // ResumeTests
        XCTAssertEqual(Set(ids).count, ids.count, "duplicate case ids")
        XCTAssertEqual(rows.subtracting(ids).sorted(), [], "rows in docs/bad-inputs.md without a test")
        XCTAssertEqual(Set(ids).subtracting(rows).sorted(), [], "cases missing from docs/bad-inputs.md")
    }
}
