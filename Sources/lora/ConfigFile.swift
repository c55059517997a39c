import Foundation
import Tensors
import Yams

/// `--config FILE.yaml`: options from a file, as if typed before the command line's own (which therefore win).
///
/// Keys are option names with or without dashes (`lr-schedule`, `lr_schedule`); `true`/`false` of a flag turns it
/// on or leaves it off; a list repeats the option.
enum ConfigFile {
    /// Options that are flags (no value) in some subcommand.
    static let flags: Set<String> = ["rslora", "dora", "adalora", "skip-long", "overwrite", "no-generate", "grad-checkpoint"]

    /// `arguments` (without the program name) with the file's options inserted after the subcommand names.
    static func expand(_ arguments: [String]) throws -> [String] {
        guard let index = arguments.firstIndex(where: { $0 == "--config" || $0.hasPrefix("--config=") }) else {
            return arguments
        }
        let path: String
        var rest = arguments
        if arguments[index] == "--config" {
            guard index + 1 < arguments.count else { throw LoRAKitError("--config needs a YAML file") }
            path = arguments[index + 1]
            rest.removeSubrange(index...(index + 1))
        } else {
            path = String(arguments[index].dropFirst("--config=".count))
            rest.remove(at: index)
        }
        let fileArguments = try options(fromFile: path)
        // Subcommand names come first (`tokenizer train`), then options.
        let firstOption = rest.firstIndex { $0.hasPrefix("-") } ?? rest.count
        return Array(rest[..<firstOption]) + fileArguments + Array(rest[firstOption...])
    }

    static func options(fromFile path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoRAKitError.file(path, "cannot read the config file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw LoRAKitError.file(path, "not UTF-8 text") }
        let root: Any?
        do { root = try Yams.load(yaml: text) } catch { throw LoRAKitError.file(path, "not valid YAML: \(error)") }
        guard let mapping = root as? [String: Any] else {
            throw LoRAKitError.file(path, "expected a mapping of option names to values (e.g. `rank: 8`)")
        }
        var out: [String] = []
        for key in mapping.keys.sorted() {
            let name = key.replacingOccurrences(of: "_", with: "-").trimmingCharacters(in: CharacterSet(charactersIn: "-"))
            if name == "config" { throw LoRAKitError.file(path, "a config file cannot name another --config") }
            let values = (mapping[key] as? [Any]) ?? [mapping[key] as Any]
            for value in values {
                switch value {
                case let flag as Bool where flags.contains(name):
                    if flag { out.append("--\(name)") }
                case let bool as Bool: out += ["--\(name)", bool ? "true" : "false"]
                case let number as Int: out += ["--\(name)", String(number)]
                case let number as Double: out += ["--\(name)", String(number)]
                case let string as String: out += ["--\(name)", string]
                default:
                    throw LoRAKitError.file(path, "option '\(key)' has a value LoRAKit cannot use (\(value))")
                }
            }
        }
        return out
    }
}
