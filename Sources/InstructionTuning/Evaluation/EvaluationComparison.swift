import Foundation
import Tensors

/// Two evaluations of the same data side by side (`lora eval --baseline BASE.json`): a base model against the
/// same base with an adapter, per group and overall.
public enum EvaluationComparison {
    /// Reads a report written by `lora eval` (its JSON on stdout).
    public static func loadReport(path: String) throws -> EvaluationReport {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoRAKitError("\(path): cannot read the baseline evaluation (no such file, or not readable)")
        }
        do {
            return try JSONDecoder().decode(EvaluationReport.self, from: data)
        } catch {
            throw LoRAKitError("\(path): not an evaluation written by `lora eval` (\(describe(error)))")
        }
    }

    /// A table, one line per group present in both reports and one for all records:
    /// group, count, exact match before → after (difference), loss before → after.
    /// Refuses reports of different record counts: they are not of the same data.
    public static func table(baseline: EvaluationReport, current: EvaluationReport,
                             baselineName: String = "base", currentName: String = "adapter") throws -> [String] {
        guard baseline.count == current.count else {
            throw LoRAKitError("the baseline evaluated \(baseline.count) records and this run \(current.count): not the same data")
        }
        func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
        func row(_ name: String, _ b: EvaluationReport, _ c: EvaluationReport) -> String {
            pad(name, 14) + String(format: " %6d   %6.3f → %6.3f (%+.3f)   %7.4f → %7.4f",
                                   c.count, b.exactMatch, c.exactMatch, c.exactMatch - b.exactMatch, b.loss, c.loss)
        }
        var lines = [pad("group", 14) + "  count   exact match: \(baselineName) → \(currentName)     loss: \(baselineName) → \(currentName)"]
        if let before = baseline.groups, let after = current.groups {
            for key in after.keys.sorted() {
                guard let b = before[key], let c = after[key] else { continue }
                lines.append(row(key, b, c))
            }
        }
        lines.append(row("all", baseline, current))
        return lines
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "no \"\(key.stringValue)\" field"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return "wrong type at \(path.isEmpty ? "the top level" : path)"
        case DecodingError.dataCorrupted: return "not valid JSON"
        default: return "\(error)"
        }
    }
}
