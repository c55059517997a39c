import Checkpoints
import Foundation

extension InstructionDataset {
    /// Writes records as a JSON array of {"instruction", "input", "output"} objects, atomically.
    public static func write(_ records: [InstructionRecord], to path: String) throws {
        let objects = records.map { ["instruction": $0.instruction, "input": $0.input, "output": $0.output] }
        let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data, to: path)
    }
}
