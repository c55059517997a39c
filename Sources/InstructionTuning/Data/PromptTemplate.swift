import Foundation
import Tensors

/// A prompt template in alpaca-lora's format: one text for records with an input, one for records without.
///
/// `{instruction}` and `{input}` are replaced in one pass over the template, so a placeholder that appears in
/// the substituted text (an instruction that mentions "{input}") stays as written. The response follows the
/// prompt directly. Other braces are kept literally (unlike Python's `str.format`, `{{` is not an escape).
public struct PromptTemplate: Codable, Equatable, Sendable {
    /// The prompt of a record with a non-empty input; holds `{instruction}` and `{input}`.
    public var promptInput: String
    /// The prompt of a record without input; holds `{instruction}`.
    public var promptNoInput: String

    enum CodingKeys: String, CodingKey {
        case promptInput = "prompt_input"
        case promptNoInput = "prompt_no_input"
    }

    public init(promptInput: String, promptNoInput: String) {
        self.promptInput = promptInput
        self.promptNoInput = promptNoInput
    }

    /// Stanford Alpaca's template (DESIGN §4).
    public static let alpaca = PromptTemplate(
        promptInput: "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        promptNoInput: "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")

    /// The built-in template called `nameOrPath` ("alpaca"), or the template file at that path.
    public static func named(_ nameOrPath: String) throws -> PromptTemplate {
        if nameOrPath == "alpaca" { return .alpaca }
        guard FileManager.default.fileExists(atPath: nameOrPath) else {
            throw LoRAKitError("unknown template \"\(nameOrPath)\": use \"alpaca\" or the path of a JSON file "
                + "with \"prompt_input\" and \"prompt_no_input\"")
        }
        return try load(path: nameOrPath)
    }

    /// The template in the JSON file at `path`: an object with string keys `prompt_input` and `prompt_no_input`
    /// (alpaca-lora's `templates/*.json`; other keys such as `description` and `response_split` are ignored).
    ///
    /// Throws when the file is unreadable or malformed (naming the line and column), a key is missing or not a
    /// string, or a placeholder is missing.
    public static func load(path: String) throws -> PromptTemplate {
        let value = try JSONText.parseFile(path: path, what: "template")
        guard let object = value as? [String: Any] else {
            throw LoRAKitError.file(path, "a template is a JSON object with \"prompt_input\" and \"prompt_no_input\", "
                + "found \(JSONText.kind(of: value))")
        }
        func text(_ key: String) throws -> String {
            guard let value = object[key] else { throw LoRAKitError.file(path, "the template has no \"\(key)\" key") }
            guard let text = value as? String else {
                throw LoRAKitError.file(path, "the template's \"\(key)\" is \(JSONText.kind(of: value)), not a string")
            }
            return text
        }
        let template = PromptTemplate(promptInput: try text("prompt_input"), promptNoInput: try text("prompt_no_input"))
        try template.validate(source: path)
        return template
    }

    /// Checks that each text holds the placeholders it is used with; `source` names the template in messages.
    ///
    /// `prompt_no_input` may not hold `{input}`: it is used exactly when there is no input to put there.
    public func validate(source: String) throws {
        if !promptInput.contains("{instruction}") {
            throw LoRAKitError.file(source, "the template's \"prompt_input\" lacks the {instruction} placeholder")
        }
        if !promptInput.contains("{input}") {
            throw LoRAKitError.file(source, "the template's \"prompt_input\" lacks the {input} placeholder")
        }
        if !promptNoInput.contains("{instruction}") {
            throw LoRAKitError.file(source, "the template's \"prompt_no_input\" lacks the {instruction} placeholder")
        }
        if promptNoInput.contains("{input}") {
            throw LoRAKitError.file(source, "the template's \"prompt_no_input\" holds {input}, but it is used only "
                + "for records without input; remove the placeholder")
        }
    }

    /// The prompt for one record; an empty input selects `prompt_no_input`.
    public func prompt(instruction: String, input: String) -> String {
        if input.isEmpty { return Self.substitute(promptNoInput, instruction: instruction, input: "") }
        return Self.substitute(promptInput, instruction: instruction, input: input)
    }

    /// The prompt for `record`: the template's, or the record's own prompt when it has one.
    public func prompt(for record: InstructionRecord) -> String {
        record.rawPrompt ?? prompt(instruction: record.instruction, input: record.input)
    }

    /// `template` with each `{instruction}` and `{input}` replaced, scanning only the template, never the values.
    ///
    /// Works on UTF-8 bytes, as Python's `str.format` works on code points: a placeholder is found even next to a
    /// combining mark, and cutting at the ASCII braces always leaves whole characters.
    static func substitute(_ template: String, instruction: String, input: String) -> String {
        let placeholders: [(name: [UInt8], value: String)] = [(Array("{instruction}".utf8), instruction),
                                                             (Array("{input}".utf8), input)]
        let text = Array(template.utf8)
        var result: [UInt8] = []
        result.reserveCapacity(text.count + instruction.utf8.count + input.utf8.count)
        var i = 0
        scan: while i < text.count {
            if text[i] == UInt8(ascii: "{") {
                for placeholder in placeholders where text[i...].starts(with: placeholder.name) {
                    result.append(contentsOf: placeholder.value.utf8)
                    i += placeholder.name.count
                    continue scan
                }
            }
            result.append(text[i])
            i += 1
        }
        return String(decoding: result, as: UTF8.self)
    }
}
