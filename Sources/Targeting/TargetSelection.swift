import Foundation
import MiniGPT
import Tensors

/// Which projections and which blocks get adapters, parsed from the command line's `--targets` and `--layers`.
public enum TargetSelection {
    /// Names a user may write for one projection or a group of them.
    public static let validTargetsHelp = "q, k, v, o, gate, up, down, attn, ffn, all (or q_proj … down_proj)"

    /// The projections one name stands for: a short name (`q`), an HF name (`q_proj`) or a group
    /// (`attn` = q,k,v,o; `ffn` = gate,up,down; `all`, and PEFT's `all-linear`), or nil for an unknown name.
    public static func projections(named name: String) -> [Projection]? {
        switch name.lowercased() {
        case "attn", "attention", "self_attn": return [.q, .k, .v, .o]
        case "ffn", "mlp": return [.gate, .up, .down]
        case "all", "all-linear": return Projection.allCases
        case let short:
            if let p = Projection(rawValue: short) { return [p] }
            if let p = Projection.allCases.first(where: { $0.hfName == short }) { return [p] }
            return nil
        }
    }

    /// Parses `--targets`: names separated by commas and/or spaces, e.g. `"q,v"`, `"attn, up"`, `"q_proj v_proj"`.
    ///
    /// Duplicates are removed and the result is in the canonical order q, k, v, o, gate, up, down.
    public static func parseTargets(_ text: String) throws -> [Projection] {
        let names = text.split(whereSeparator: { $0 == "," || $0.isWhitespace }).map(String.init)
        guard !names.isEmpty else { throw LoRAKitError("no targets given: valid targets are \(validTargetsHelp)") }
        var chosen = Set<Projection>()
        for name in names {
            guard let group = projections(named: name) else {
                throw LoRAKitError("unknown target '\(name)': valid targets are \(validTargetsHelp)")
            }
            chosen.formUnion(group)
        }
        return chosen.sorted()
    }

    /// Parses `--layers` for a model of `layerCount` blocks: nil or `"all"` → every block; otherwise a comma
    /// separated list of indices (`7`), inclusive ranges (`0-3`) and `last:K` (the top K blocks).
    ///
    /// Returns sorted, distinct block indices; an index outside `0..<layerCount` or a malformed entry is an error
    /// naming the entry and the model's layer count.
    public static func parseLayers(_ text: String?, layerCount: Int) throws -> [Int] {
        let all = Array(0..<layerCount)
        guard let text else { return all }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.lowercased() == "all" { return all }
        let entries = trimmed.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        let range = layerCount > 0 ? "0-\(layerCount - 1)" : "none"
        func failure(_ entry: String, _ why: String) -> LoRAKitError {
            LoRAKitError("--layers entry '\(entry)' \(why); the model has \(layerCount) layers (\(range)); write e.g. 0-3,7 or last:4 or all")
        }
        func index(_ entry: String, _ part: String) throws -> Int {
            guard let value = Int(part), value >= 0 else { throw failure(entry, "is not a layer index") }
            guard value < layerCount else { throw failure(entry, "is out of range") }
            return value
        }
        var chosen = Set<Int>()
        for entry in entries {
            guard !entry.isEmpty else { throw failure(entry, "is empty") }
            if entry.lowercased().hasPrefix("last:") {
                guard let count = Int(entry.dropFirst(5).trimmingCharacters(in: .whitespaces)), count > 0 else {
                    throw failure(entry, "needs a positive count after last:")
                }
                guard count <= layerCount else { throw failure(entry, "asks for more layers than exist") }
                chosen.formUnion((layerCount - count)..<layerCount)
            } else if let dash = entry.firstIndex(of: "-"), dash != entry.startIndex {
                let low = try index(entry, entry[..<dash].trimmingCharacters(in: .whitespaces))
                let high = try index(entry, entry[entry.index(after: dash)...].trimmingCharacters(in: .whitespaces))
                guard low <= high else { throw failure(entry, "is an empty range (its start is after its end)") }
                chosen.formUnion(low...high)
            } else {
                chosen.insert(try index(entry, entry))
            }
        }
        return chosen.sorted()
    }
}
