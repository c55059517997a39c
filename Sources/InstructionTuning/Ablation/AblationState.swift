import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// What an ablation directory holds besides its results, so that `lora ablate --resume DIR` continues the same
/// study: `ablation.json` (the plan as resolved, the training options, seeds) and, per finished run,
/// `runs/NAME/result.json`.
struct AblationState: Codable {
    struct Skipped: Codable {
        var name: String
        var reason: String
    }

    var entries: [AblationPlan.Entry]
    var skipped: [Skipped]
    /// The options every run starts from; a `--val-fraction` split is already made (`train.json`, `val.json`).
    var training: FineTuneOptions
    var seeds: Int
    var evalLimit: Int
    var format = 1

    static let fileName = "ablation.json"
    static let resultFileName = "result.json"

    init(runner: AblationRunner, training: FineTuneOptions) {
        entries = runner.plan.entries
        skipped = runner.plan.skipped.map { Skipped(name: $0.name, reason: $0.reason) }
        self.training = training
        seeds = runner.seeds
        evalLimit = runner.evalLimit
    }

    var plan: AblationPlan {
        AblationPlan(entries: entries, skipped: skipped.map { ($0.name, $0.reason) })
    }

    func write(to directory: String) throws {
        try AtomicFile.write(try Self.encode(self), to: directory + "/" + Self.fileName)
    }

    static func read(from directory: String) throws -> AblationState {
        let path = directory + "/" + fileName
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoRAKitError.file(directory, "holds no \(fileName): not the --out directory of `lora ablate` to resume")
        }
        do { return try JSONDecoder().decode(AblationState.self, from: data) } catch {
            throw LoRAKitError.file(path, "not the state of a LoRAKit ablation (\(error))")
        }
    }

    /// The result of a finished run, or nil when the run has not finished (or its result file is unreadable,
    /// in which case the run is evaluated again).
    static func finishedResult(in runDirectory: String) -> AblationResult? {
        guard let data = FileManager.default.contents(atPath: runDirectory + "/" + resultFileName) else { return nil }
        return try? JSONDecoder().decode(AblationResult.self, from: data)
    }

    static func writeResult(_ result: AblationResult, in runDirectory: String) throws {
        try AtomicFile.write(try encode(result), to: runDirectory + "/" + resultFileName)
    }

    private static func encode<Value: Encodable>(_ value: Value) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(value)
    }
}

extension AblationPlan {
    /// A plan as it was resolved when its ablation started.
    init(entries: [Entry], skipped: [(name: String, reason: String)]) {
        self.entries = entries
        self.skipped = skipped
    }
}
