import Foundation
import Tensors

/// One prompt of `lora generate --prompts FILE`: what to ask and which adapters to ask it with.
public struct PromptRequest: Equatable, Sendable {
    /// The instruction, formatted with the prompt template (or nil with `prompt`).
    public var instruction: String?
    /// Context for the instruction; empty selects the template's no-input prompt.
    public var input: String
    /// Raw prompt text, sent without a template (instead of `instruction`).
    public var prompt: String?
    /// A conversation to answer, ending with a user message, written in the chat template (instead of the others).
    public var messages: [ChatMessage]? = nil
    /// `DIR` or `DIR:WEIGHT` arguments for this prompt; nil means the command line's `--adapter` list, and an
    /// empty list the base alone.
    public var adapters: [String]?
    /// The line of the file the request is on (1-based), for messages and output.
    public var line: Int
}

/// Loading a JSONL file of prompts: one object per line with `instruction` (and optional `input`), `prompt`, or
/// `messages` (a conversation ending with the user message to answer), and optionally `adapters` (an array of `DIR[:WEIGHT]` strings) or `adapter` (one such string).
public enum PromptList {
    public static func load(path: String) throws -> [PromptRequest] {
        let bytes = try JSONText.read(path: path, what: "prompt list")
        var requests: [PromptRequest] = []
        try JSONText.forEachLine(in: bytes) { line, lineNumber in
            switch JSONText.parse(line) {
            case .success(let value): requests.append(try request(value, line: lineNumber, path: path))
            case .failure(let error):
                throw LoRAKitError.file(path, "malformed JSON at \(JSONText.place(of: error, line: line, number: lineNumber)) "
                    + "(\(error.reason)); a prompt list holds one JSON object per line")
            }
        }
        if requests.isEmpty { throw LoRAKitError.file(path, "no prompts (the file holds only blank lines)") }
        return requests
    }

    static func request(_ value: Any, line: Int, path: String) throws -> PromptRequest {
        let label = "line \(line)"
        guard let object = value as? [String: Any] else {
            throw LoRAKitError.file(path, "\(label) is \(JSONText.kind(of: value)), not an object with an \"instruction\" or a \"prompt\"")
        }
        func string(_ name: String) throws -> String? {
            guard let value = object[name] else { return nil }
            guard let text = value as? String else {
                throw LoRAKitError.file(path, "\(label): field \"\(name)\" is \(JSONText.kind(of: value)), not a string")
            }
            return text
        }
        let instruction = try string("instruction"), prompt = try string("prompt"), input = try string("input")
        let messages = try object["messages"].map {
            try InstructionDataset.conversation($0, label: label, path: path, answered: false)
        }
        guard [instruction != nil, prompt != nil, messages != nil].filter({ $0 }).count == 1 else {
            throw LoRAKitError.file(path, "\(label) needs exactly one of \"instruction\", \"prompt\" or \"messages\"")
        }
        if input != nil && instruction == nil {
            throw LoRAKitError.file(path, "\(label): \"input\" goes with \"instruction\", not with a raw \"prompt\"")
        }
        if object["adapters"] != nil && object["adapter"] != nil {
            throw LoRAKitError.file(path, "\(label) has both \"adapter\" and \"adapters\"; give one")
        }
        var adapters: [String]?
        if let one = try string("adapter") { adapters = [one] }
        if let many = object["adapters"] {
            guard let list = many as? [Any], let strings = list as? [String] else {
                throw LoRAKitError.file(path, "\(label): field \"adapters\" is \(JSONText.kind(of: many)), not an array of \"DIR[:WEIGHT]\" strings")
            }
            adapters = strings
        }
        return PromptRequest(instruction: instruction, input: input ?? "", prompt: prompt, messages: messages,
                             adapters: adapters, line: line)
    }
}
