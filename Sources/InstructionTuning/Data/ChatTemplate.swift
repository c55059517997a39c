import Checkpoints
import Foundation
import MiniGPT
import Tensors
import Tokenizer

/// One message of a conversation record (`{"messages": [{"role", "content"}, …]}`, the chat form of OpenAI's,
/// mlx-lm's and torchtune's data).
public struct ChatMessage: Equatable, Hashable, Sendable {
    public enum Role: String, Equatable, Hashable, Sendable, CaseIterable {
        case system, user, assistant
    }

    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }
}

/// How a conversation becomes tokens: text around each message, BOS and EOS ids, and which parts are learned (the
/// assistant messages and the EOS that ends each of them; everything else is prompt).
///
/// Built in: `llama2` (Llama 2 chat: `[BOS] [INST] <<SYS>>…<</SYS>> user [/INST] assistant [EOS]`, one BOS per
/// turn, the system message inside the first turn), `mistral` (Mistral instruct: one BOS, `[INST] user [/INST]`
/// turns, no system message) and `zephyr` (Zephyr and TinyLlama chat: `<|role|>\n` before each message, EOS after
/// each, a line break between). A JSON file gives another: `{"system": "…{content}…",
/// "user": "…", "assistant": "…", "separator": "\n", "eos_after_every_message": false}`. Each text is encoded on its
/// own (as the Alpaca prompt and response are, DESIGN §4), so special ids are ids, never text that happens to
/// spell `</s>`.
public struct ChatTemplate: Equatable, Sendable {
    /// A piece of a rendered conversation.
    public enum Segment: Equatable, Sendable {
        case bos, eos, text(String)
    }

    /// The text before and after a role's content.
    public struct RoleFormat: Equatable, Sendable {
        public var prefix: String
        public var suffix: String

        public init(prefix: String, suffix: String) {
            self.prefix = prefix
            self.suffix = suffix
        }
    }

    public var name: String
    /// Per role (a template without a system format refuses system messages).
    public var formats: [ChatMessage.Role: RoleFormat]
    /// Text between two messages (prompt).
    public var separator: String
    /// EOS after every message, or after the assistant's only.
    public var eosAfterEveryMessage: Bool
    /// Llama 2's turns: `[BOS] [INST] {system + user} [/INST] {assistant} [EOS]`, users and assistants alternating.
    public var llama2Turns: Bool

    public static let llama2 = ChatTemplate(
        name: "llama2", formats: [.user: RoleFormat(prefix: "[INST] ", suffix: " [/INST]"),
                                  .assistant: RoleFormat(prefix: "", suffix: ""),
                                  .system: RoleFormat(prefix: "<<SYS>>\n", suffix: "\n<</SYS>>\n\n")],
        separator: "", eosAfterEveryMessage: false, llama2Turns: true)

    public static let mistral = ChatTemplate(
        name: "mistral", formats: [.user: RoleFormat(prefix: "[INST] ", suffix: " [/INST]"),
                                   .assistant: RoleFormat(prefix: "", suffix: "")],
        separator: "", eosAfterEveryMessage: false, llama2Turns: false)

    public static let zephyr = ChatTemplate(
        name: "zephyr", formats: [.system: RoleFormat(prefix: "<|system|>\n", suffix: ""),
                                  .user: RoleFormat(prefix: "<|user|>\n", suffix: ""),
                                  .assistant: RoleFormat(prefix: "<|assistant|>\n", suffix: "")],
        separator: "\n", eosAfterEveryMessage: true, llama2Turns: false)

    public static let builtIn: [ChatTemplate] = [.llama2, .mistral, .zephyr]

    /// `nameOrPath` for the model `base`: "auto" is the base's own chat template (`chat_template` in its
    /// `tokenizer_config.json`, or a GGUF file's `tokenizer.chat_template`, recognised by its markers; llama2 when
    /// the base has none), anything else `named`.
    public static func resolve(_ nameOrPath: String, base: String) throws -> ChatTemplate {
        guard nameOrPath == "auto" else { return try named(nameOrPath) }
        if BaseModel.isGGUF(base) {
            let file = try BaseModel.file(base)
            guard let value = file.metadata["tokenizer.chat_template"] else { return .llama2 }
            guard let source = value.text else { throw LoRAKitError.file(base, "tokenizer.chat_template is \(value), not a string") }
            if let template = recognise(source) { return template }
            throw LoRAKitError.file(base, "its chat template (tokenizer.chat_template) is none LoRAKit knows (llama2, mistral "
                + "or zephyr); give --chat-template with one of those names or a JSON file with user and assistant texts")
        }
        let path = (base as NSString).appendingPathComponent("tokenizer_config.json")
        guard FileManager.default.fileExists(atPath: path) else { return .llama2 }
        let value = try JSONText.parseFile(path: path, what: "tokenizer config")
        guard let object = value as? [String: Any], let entry = object["chat_template"] else { return .llama2 }
        guard let source = BaseModel.chatTemplate(inTokenizerConfigEntry: entry) else {
            throw LoRAKitError.file(path, "\"chat_template\" is \(JSONText.kind(of: entry)) without a \"default\" template; "
                + "give --chat-template")
        }
        if let template = recognise(source) { return template }
        throw LoRAKitError.file(path, "its chat template is none LoRAKit knows (llama2, mistral or zephyr); give "
            + "--chat-template with one of those names or a JSON file with user and assistant texts")
    }

    /// The built-in template a Jinja chat template writes, told by its markers.
    static func recognise(_ jinja: String) -> ChatTemplate? {
        if jinja.contains("<|user|>") && jinja.contains("<|assistant|>") { return .zephyr }
        if jinja.contains("[INST]") { return jinja.contains("<<SYS>>") ? .llama2 : .mistral }
        return nil
    }

    /// The built-in template called `nameOrPath`, or the template file at that path.
    public static func named(_ nameOrPath: String) throws -> ChatTemplate {
        if let template = builtIn.first(where: { $0.name == nameOrPath }) { return template }
        guard FileManager.default.fileExists(atPath: nameOrPath) else {
            throw LoRAKitError("unknown chat template \"\(nameOrPath)\": use \(builtIn.map { "\"\($0.name)\"" }.joined(separator: ", ")) "
                + "or the path of a JSON file with \"user\" and \"assistant\" texts holding {content}")
        }
        return try load(path: nameOrPath)
    }

    /// A template file: `user` and `assistant` (and optionally `system`) texts, each holding `{content}` once;
    /// optional `separator` (text between messages) and `eos_after_every_message`.
    public static func load(path: String) throws -> ChatTemplate {
        let value = try JSONText.parseFile(path: path, what: "chat template")
        guard let object = value as? [String: Any] else {
            throw LoRAKitError.file(path, "a chat template is a JSON object with \"user\" and \"assistant\" texts, "
                + "found \(JSONText.kind(of: value))")
        }
        var formats: [ChatMessage.Role: RoleFormat] = [:]
        for role in ChatMessage.Role.allCases {
            guard let entry = object[role.rawValue] else {
                if role == .system { continue }
                throw LoRAKitError.file(path, "the chat template has no \"\(role.rawValue)\" text")
            }
            guard let text = entry as? String else {
                throw LoRAKitError.file(path, "the chat template's \"\(role.rawValue)\" is \(JSONText.kind(of: entry)), not a string")
            }
            let parts = text.components(separatedBy: "{content}")
            guard parts.count == 2 else {
                throw LoRAKitError.file(path, "the chat template's \"\(role.rawValue)\" must hold {content} exactly once, "
                    + "found it \(parts.count - 1) times")
            }
            formats[role] = RoleFormat(prefix: parts[0], suffix: parts[1])
        }
        var separator = ""
        if let entry = object["separator"] {
            guard let text = entry as? String else {
                throw LoRAKitError.file(path, "the chat template's \"separator\" is \(JSONText.kind(of: entry)), not a string")
            }
            separator = text
        }
        var eosAfterEvery = false
        if let entry = object["eos_after_every_message"] {
            guard let flag = entry as? Bool else {
                throw LoRAKitError.file(path, "the chat template's \"eos_after_every_message\" is \(JSONText.kind(of: entry)), not true or false")
            }
            eosAfterEvery = flag
        }
        return ChatTemplate(name: path, formats: formats, separator: separator, eosAfterEveryMessage: eosAfterEvery,
                            llama2Turns: false)
    }

    /// Why this template cannot write `messages`, or nil. (What holds for every template — a known role, system
    /// first, an assistant message last — is checked when the data is read.)
    public func problem(with messages: [ChatMessage]) -> String? {
        if formats[.system] == nil, messages.contains(where: { $0.role == .system }) {
            return "the chat template \(name) has no \"system\" text, but the conversation has a system message"
        }
        if llama2Turns {
            let turns = messages.first?.role == .system ? messages.dropFirst() : messages[...]
            for (i, message) in turns.enumerated() where message.role != (i % 2 == 0 ? .user : .assistant) {
                return "the llama2 chat template needs user and assistant messages alternating, user first "
                    + "(after an optional system message); message \(i + 1 + (messages.count - turns.count)) is \(message.role.rawValue)"
            }
        }
        return nil
    }

    /// Throws when a conversation among `records` is one this template cannot write (`problem(with:)`), naming the
    /// record by its place in `records`; with `path`, the error names that file.
    public func check(_ records: [InstructionRecord], path: String? = nil) throws {
        for (i, record) in records.enumerated() {
            guard let messages = record.messages, let problem = problem(with: messages) else { continue }
            let message = "record \(i + 1): \(problem)"
            throw path.map { LoRAKitError.file($0, message) } ?? LoRAKitError(message)
        }
    }

    /// The ids of `messages` (BOS and EOS as ids, each text encoded on its own) and where the learned ids lie: each
    /// assistant message with its EOS, one range each.
    public func encode(_ messages: [ChatMessage], tokenizer: SentencePieceTokenizer, bosId: Int32, eosId: Int32)
        throws -> (ids: [Int32], learned: [Range<Int>]) {
        var ids: [Int32] = [], learned: [Range<Int>] = []
        for (segment, isLearned) in render(messages) {
            let start = ids.count
            ids += try Self.ids(of: segment, tokenizer: tokenizer, bosId: bosId, eosId: eosId)
            guard isLearned, ids.count > start else { continue }
            // a learned segment right after another extends its range (an answer and its EOS)
            if let last = learned.last, last.upperBound == start { learned[learned.count - 1] = last.lowerBound..<ids.count }
            else { learned.append(start..<ids.count) }
        }
        return (ids, learned)
    }

    /// The ids an assistant's answer to `conversation` follows.
    public func promptIDs(_ conversation: [ChatMessage], tokenizer: SentencePieceTokenizer, bosId: Int32,
                          eosId: Int32) throws -> [Int32] {
        try render(conversation, generationPrompt: true).flatMap {
            try Self.ids(of: $0.segment, tokenizer: tokenizer, bosId: bosId, eosId: eosId)
        }
    }

    private static func ids(of segment: Segment, tokenizer: SentencePieceTokenizer, bosId: Int32, eosId: Int32) throws -> [Int32] {
        switch segment {
        case .bos: return [bosId]
        case .eos: return [eosId]
        case .text(let text): return try tokenizer.encode(text)
        }
    }

    /// The conversation as segments, each with whether it is learned. With `generationPrompt` the segments end
    /// with what precedes an assistant message, for generating one.
    public func render(_ messages: [ChatMessage], generationPrompt: Bool = false) -> [(segment: Segment, learned: Bool)] {
        var out: [(segment: Segment, learned: Bool)] = [(.bos, false)]
        func add(_ text: String, _ learned: Bool) { if !text.isEmpty { out.append((.text(text), learned)) } }
        if llama2Turns {
            var system: String?
            var first = true
            for message in messages {
                switch message.role {
                case .system:
                    system = message.content
                case .user:
                    if !first { out.append((.bos, false)) }
                    first = false
                    let empty = RoleFormat(prefix: "", suffix: "")
                    let user = formats[.user] ?? empty, sys = formats[.system] ?? empty
                    let systemText = system.map { sys.prefix + $0 + sys.suffix } ?? ""
                    system = nil
                    add(user.prefix + systemText + message.content + user.suffix, false)
                case .assistant:
                    add(message.content, true)
                    out.append((.eos, true))
                }
            }
            return out
        }
        for (i, message) in messages.enumerated() {
            guard let format = formats[message.role] else { continue }
            let learned = message.role == .assistant
            if i > 0 { add(separator, false) }
            add(format.prefix, false)
            add(message.content + format.suffix, learned)
            if learned || eosAfterEveryMessage { out.append((.eos, learned)) }
        }
        if generationPrompt, let assistant = formats[.assistant] {
            if !messages.isEmpty { add(separator, false) }
            add(assistant.prefix, false)
        }
        return out
    }
}
