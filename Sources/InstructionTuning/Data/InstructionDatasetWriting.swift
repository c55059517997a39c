import Checkpoints
import Foundation

extension InstructionDataset {
    /// Writes records as a JSON array, atomically, each in its own form: {"instruction", "input", "output"},
    /// {"prompt", "completion"}, {"text"} for a record with an empty prompt of its own, or {"messages"}.
    public static func write(_ records: [InstructionRecord], to path: String) throws {
        let objects = records.map { record -> [String: Any] in
            if let messages = record.messages {
                return ["messages": messages.map { ["role": $0.role.rawValue, "content": $0.content] }]
            }
            switch record.rawPrompt {
            case nil: return ["instruction": record.instruction, "input": record.input, "output": record.output]
            case ""?: return ["text": record.output]
            case let prompt?: return ["prompt": prompt, "completion": record.output]
            }
        }
        let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data, to: path)
    }
}
