/// One training example of an instruction dataset: what to do, optional context, and the answer to learn.
///
/// Four forms of record are read: Alpaca's `instruction`, `input` (optional, "" when absent) and `output`, put
/// into the prompt template; `prompt` and `completion` (mlx-lm's and OpenAI's completion data), the prompt used as
/// it is, without a template; `text` (plain text, every token learned: an empty prompt); and `messages` (a
/// conversation, put into the chat template, every assistant message learned).
public struct InstructionRecord: Equatable, Hashable, Sendable {
    /// The task, such as "Summarize the text." ("" for a prompt/completion or text record).
    public var instruction: String
    /// Context for the task; empty when the record has none, which selects the template's no-input prompt.
    public var input: String
    /// The response the model learns to produce (the completion, or the whole text).
    public var output: String
    /// The record's other string fields (e.g. a task `family`), kept for grouping results; never trained on.
    public var labels: [String: String]
    /// The prompt as it is, without a template: a `prompt`/`completion` record's prompt, "" for a `text` record;
    /// nil for an Alpaca record, whose prompt the template makes.
    public var rawPrompt: String?
    /// The conversation of a `messages` record (nil otherwise): `instruction` is then its last user message and
    /// `output` its last assistant message, the answer evaluation compares with.
    public var messages: [ChatMessage]?

    public init(instruction: String, input: String = "", output: String, labels: [String: String] = [:]) {
        self.instruction = instruction
        self.input = input
        self.output = output
        self.labels = labels
        rawPrompt = nil
    }

    /// A record whose prompt is given as it is (`prompt`/`completion`; a `text` record has an empty prompt).
    public init(prompt: String, completion: String, labels: [String: String] = [:]) {
        instruction = ""
        input = ""
        output = completion
        self.labels = labels
        rawPrompt = prompt
    }

    /// A conversation; the last message is the assistant's (checked where records are read).
    public init(messages: [ChatMessage], labels: [String: String] = [:]) {
        instruction = messages.last { $0.role == .user }?.content ?? ""
        input = ""
        output = messages.last?.content ?? ""
        self.labels = labels
        rawPrompt = nil
        self.messages = messages
    }
}
