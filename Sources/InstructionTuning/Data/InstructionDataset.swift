import Foundation
import Tensors

/// Loading an instruction dataset: a JSON array of records, or JSONL with one record per line.
///
/// The format is told by the first non-whitespace byte: `[` is a JSON array, anything else JSONL. Each record is
/// in one of the forms of `InstructionRecord` (Alpaca's `instruction`/`input`/`output`, `prompt`/`completion`,
/// `text`, or `messages`), told by its keys; other string keys are kept as labels. Every problem is one `LoRAKitError` naming the file and
/// the place — byte offset, line and column, or record and field — and no input crashes the loader.
public enum InstructionDataset {
    /// The records of the dataset at `path`, in file order.
    ///
    /// Throws when the file is missing or unreadable, is not UTF-8, holds malformed JSON, holds a record that is
    /// not an object, that has none of the forms' keys or misses one of its form's required keys, or whose fields
    /// are not strings, or holds no records.
    public static func load(path: String) throws -> [InstructionRecord] {
        let bytes = try JSONText.read(path: path, what: "dataset")
        guard let first = bytes.first(where: { !isWhitespace($0) }) else {
            throw LoRAKitError.file(path, "no records (the file is empty)")
        }
        return first == UInt8(ascii: "[") ? try loadArray(bytes, path: path) : try loadLines(bytes, path: path)
    }

    /// A file holding one JSON array of record objects.
    static func loadArray(_ bytes: [UInt8], path: String) throws -> [InstructionRecord] {
        let value: Any
        switch JSONText.parse(bytes[...]) {
        case .success(let parsed): value = parsed
        case .failure(let error): throw JSONText.malformed(error, in: bytes, path: path)
        }
        guard let array = value as? [Any] else {
            // The first byte was '[', so a successful parse is an array; this guards against surprises.
            throw LoRAKitError.file(path, "expected a JSON array of records, found \(JSONText.kind(of: value))")
        }
        if array.isEmpty { throw LoRAKitError.file(path, "no records (the JSON array is empty)") }
        return try array.enumerated().map { index, element in
            try record(element, label: "record \(index + 1)", path: path)
        }
    }

    /// A JSONL file: one record object per non-blank line.
    static func loadLines(_ bytes: [UInt8], path: String) throws -> [InstructionRecord] {
        var records: [InstructionRecord] = []
        try JSONText.forEachLine(in: bytes) { line, lineNumber in
            let label = "record \(records.count + 1) (line \(lineNumber))"
            switch JSONText.parse(line) {
            case .success(let value):
                records.append(try record(value, label: label, path: path))
            case .failure(let error):
                if records.isEmpty { try rejectMultiLineObject(bytes, path: path) }
                throw LoRAKitError.file(path, "malformed JSON at \(JSONText.place(of: error, line: line, number: lineNumber)) "
                    + "(\(error.reason)); a JSONL dataset holds one JSON object per line")
            }
        }
        if records.isEmpty { throw LoRAKitError.file(path, "no records (the file holds only blank lines)") }
        return records
    }

    /// A pretty-printed single object fails as JSONL on its first line; say what the file is instead.
    private static func rejectMultiLineObject(_ bytes: [UInt8], path: String) throws {
        guard case .success(let value) = JSONText.parse(bytes[...]), value is [String: Any] else { return }
        throw LoRAKitError.file(path, "the file holds one JSON object spread over several lines; a dataset is "
            + "a JSON array of records ([{\"instruction\": …, \"output\": …}, …]) or JSONL (one object per line)")
    }

    /// The keys of the three record forms.
    static let formKeys: Set<String> = ["instruction", "input", "output", "prompt", "completion", "text", "messages"]

    /// The record of a parsed JSON value; `label` says which record it is in messages.
    static func record(_ value: Any, label: String, path: String) throws -> InstructionRecord {
        guard let object = value as? [String: Any] else {
            throw LoRAKitError.file(path, "\(label) is \(JSONText.kind(of: value)), not an object with "
                + "\"instruction\" and \"output\" strings")
        }
        func field(_ name: String, required: Bool) throws -> String {
            guard let value = object[name] else {
                if required { throw LoRAKitError.file(path, "\(label) has no \"\(name)\" field") }
                return ""
            }
            guard let text = value as? String else {
                throw LoRAKitError.file(path, "\(label): field \"\(name)\" is \(JSONText.kind(of: value)), not a string")
            }
            return text
        }
        var labels: [String: String] = [:]
        for (key, value) in object where !formKeys.contains(key) {
            if let text = value as? String { labels[key] = text }
        }
        // The form is told by its keys, Alpaca's first (a record with an "instruction" is always one).
        if object["instruction"] != nil || object["output"] != nil {
            return InstructionRecord(instruction: try field("instruction", required: true),
                                     input: try field("input", required: false),
                                     output: try field("output", required: true), labels: labels)
        }
        if object["prompt"] != nil || object["completion"] != nil {
            return InstructionRecord(prompt: try field("prompt", required: true),
                                     completion: try field("completion", required: true), labels: labels)
        }
        if object["text"] != nil {
            return InstructionRecord(prompt: "", completion: try field("text", required: true), labels: labels)
        }
        if let messages = object["messages"] {
            return InstructionRecord(messages: try conversation(messages, label: label, path: path), labels: labels)
        }
        throw LoRAKitError.file(path, "\(label) has none of the fields of a record: \"instruction\" and \"output\" "
            + "(and \"input\"), \"prompt\" and \"completion\", \"text\", or \"messages\"")
    }

    /// The messages of a conversation record: objects with a `role` (system, user or assistant) and a `content`
    /// string; a system message only first, at least one user message, an assistant message last (a user message
    /// last when the conversation is still to be `answered`, as a prompt).
    static func conversation(_ value: Any, label: String, path: String, answered: Bool = true) throws -> [ChatMessage] {
        guard let array = value as? [Any] else {
            throw LoRAKitError.file(path, "\(label): \"messages\" is \(JSONText.kind(of: value)), not an array of "
                + "{\"role\", \"content\"} objects")
        }
        let roles = ChatMessage.Role.allCases.map(\.rawValue).joined(separator: ", ")
        let messages = try array.enumerated().map { i, element -> ChatMessage in
            let place = "\(label), message \(i + 1)"
            guard let object = element as? [String: Any] else {
                throw LoRAKitError.file(path, "\(place) is \(JSONText.kind(of: element)), not a {\"role\", \"content\"} object")
            }
            guard let roleValue = object["role"] else { throw LoRAKitError.file(path, "\(place) has no \"role\"") }
            guard let name = roleValue as? String else {
                throw LoRAKitError.file(path, "\(place): \"role\" is \(JSONText.kind(of: roleValue)), not a string")
            }
            guard let role = ChatMessage.Role(rawValue: name) else {
                throw LoRAKitError.file(path, "\(place): role \"\(name)\" is not one of \(roles)")
            }
            guard let contentValue = object["content"] else { throw LoRAKitError.file(path, "\(place) has no \"content\"") }
            guard let content = contentValue as? String else {
                throw LoRAKitError.file(path, "\(place): \"content\" is \(JSONText.kind(of: contentValue)), not a string")
            }
            if role == .system && i > 0 {
                throw LoRAKitError.file(path, "\(place) is a system message; a system message may only come first")
            }
            return ChatMessage(role: role, content: content)
        }
        guard messages.contains(where: { $0.role == .user }) else {
            throw LoRAKitError.file(path, "\(label): the conversation has no user message")
        }
        let last = messages.last.map { ($0.role == .assistant ? "an " : "a ") + $0.role.rawValue + " message" } ?? "no message"
        if answered && messages.last?.role != .assistant {
            throw LoRAKitError.file(path, "\(label): the conversation must end with an assistant message (the answer "
                + "to learn), ends with \(last)")
        }
        if !answered && messages.last?.role != .user {
            throw LoRAKitError.file(path, "\(label): the conversation must end with the user message to answer, ends with \(last)")
        }
        return messages
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    @inline(__always)
    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }
}
