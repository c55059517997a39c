/// One training example of an instruction dataset: what to do, optional context, and the answer to learn.
///
/// The JSON keys are alpaca's: `instruction`, `input` (optional, "" when absent) and `output`.
public struct InstructionRecord: Equatable, Hashable, Sendable {
    /// The task, such as "Summarize the text.".
    public var instruction: String
    /// Context for the task; empty when the record has none, which selects the template's no-input prompt.
    public var input: String
    /// The response the model learns to produce.
    public var output: String
    /// The record's other string fields (e.g. a task `family`), kept for grouping results; never trained on.
    public var labels: [String: String]

    public init(instruction: String, input: String = "", output: String, labels: [String: String] = [:]) {
        self.instruction = instruction
        self.input = input
        self.output = output
        self.labels = labels
    }
}
