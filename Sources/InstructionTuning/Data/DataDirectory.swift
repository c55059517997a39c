import Foundation
import Tensors

/// mlx-lm's data layout: a directory holding `train.jsonl`, `valid.jsonl` and `test.jsonl` (`.json` arrays too),
/// accepted wherever a data file is.
public enum DataDirectory {
    /// The splits' names, as mlx-lm spells them.
    public enum Split: String, Sendable {
        case train, valid, test
    }

    /// Whether `path` is a directory (a data file otherwise).
    public static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// The file of `split` in `directory` (`NAME.jsonl`, else `NAME.json`), nil when it has neither.
    public static func file(_ split: Split, in directory: String) -> String? {
        ["jsonl", "json"].map { (directory as NSString).appendingPathComponent("\(split.rawValue).\($0)") }
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    /// `path` itself when it is a file; the file of `split` when it is a directory (an error naming what is
    /// missing when the directory has no such file).
    public static func resolve(_ path: String, split: Split) throws -> String {
        guard isDirectory(path) else { return path }
        guard let file = file(split, in: path) else {
            throw LoRAKitError.file(path, "a data directory needs \(split.rawValue).jsonl or \(split.rawValue).json "
                + "(mlx-lm's layout: train.jsonl, valid.jsonl, test.jsonl)")
        }
        return file
    }
}
