import Checkpoints
import Foundation
import Targeting
import Tensors

/// Where a run is: everything besides the adapter and the optimizer moments that exact resumption needs.
struct TrainerState: Codable, Equatable {
    var step: Int
    /// Micro-batches consumed so far; with the seed it fixes the data order and position.
    var microStep: Int
    var tokens: Int
    var elapsed: Double
    var bestValidationLoss: Double?
    /// The dropout generators of the adapter's modules, in the adapter's order.
    var dropoutRNG: [RandomGenerator]
}

/// A checkpoint directory `checkpoint-STEP`: the PEFT adapter, `optimizer.safetensors` (AdamW moments) and
/// `trainer_state.json` (the run's options and `TrainerState`). Written into a temporary sibling and renamed, so
/// it is complete or absent.
public struct TrainerCheckpoint {
    public let directory: String
    public let options: FineTuneOptions
    let state: TrainerState
    let optimizerStep: Int

    private struct StateFile: Codable {
        var options: FineTuneOptions
        var state: TrainerState
        var optimizerStep: Int
        var format: Int
    }

    static func save(directory: String, step: Int, options: FineTuneOptions, adapters: AdapterSet, optimizer: AdamW,
                     state: TrainerState) throws -> String {
        let path = directory + "/checkpoint-\(step)"
        var current = state
        current.dropoutRNG = adapters.dropoutStates
        let file = StateFile(options: options, state: current, optimizerStep: optimizer.step, format: 1)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json = try encoder.encode(file)
        try AtomicFile.writeDirectory(at: path, overwrite: true) { temporary in
            try adapters.save(to: temporary, baseModelPath: options.base)
            try SafeTensorsWriter.write([(name: "exp_avg", tensor: optimizer.firstMoment),
                                         (name: "exp_avg_sq", tensor: optimizer.secondMoment)],
                                        metadata: ["format": "pt"], to: temporary + "/optimizer.safetensors")
            try AtomicFile.write(json, to: temporary + "/trainer_state.json")
        }
        return path
    }

    /// Checkpoint directories of a run, oldest first.
    static func list(directory: String) -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("checkpoint-"), let step = Int(name.dropFirst("checkpoint-".count)) else { return nil }
            return (step, directory + "/" + name)
        }.sorted { $0.0 < $1.0 }
    }

    static func prune(directory: String, keep: Int) throws {
        for old in list(directory: directory).dropLast(keep) {
            try? FileManager.default.removeItem(atPath: old.path)
        }
    }

    /// The newest checkpoint of the run in `directory` (a run's output directory or one checkpoint).
    public static func latest(in directory: String) throws -> TrainerCheckpoint {
        let fm = FileManager.default
        guard fm.fileExists(atPath: directory) else { throw LoRAKitError.file(directory, "no such run directory to resume") }
        let path: String
        if fm.fileExists(atPath: directory + "/trainer_state.json") {
            path = directory
        } else if let newest = list(directory: directory).last {
            path = newest.path
        } else {
            throw LoRAKitError.file(directory, "no checkpoint-N directory to resume from (was the run saved with --save-every, or did it finish?)")
        }
        let statePath = path + "/trainer_state.json"
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: statePath)) } catch {
            throw LoRAKitError.file(statePath, "cannot read (\(error.localizedDescription))")
        }
        let file: StateFile
        do { file = try JSONDecoder().decode(StateFile.self, from: data) } catch {
            throw LoRAKitError.file(statePath, "not a LoRAKit trainer state (\(error))")
        }
        return TrainerCheckpoint(directory: path, options: file.options, state: file.state, optimizerStep: file.optimizerStep)
    }

    /// Puts the saved moments into `optimizer` and the saved position into `state`.
    func restore(into optimizer: AdamW, state: inout TrainerState) throws {
        let moments = try SafeTensorsFile(path: directory + "/optimizer.safetensors")
        for (name, target) in [("exp_avg", optimizer.firstMoment), ("exp_avg_sq", optimizer.secondMoment)] {
            let saved = try moments.tensor(name)
            guard saved.count == target.count else {
                throw LoRAKitError.file(directory + "/optimizer.safetensors",
                                        "tensor \(name) has \(saved.count) values, the adapter has \(target.count) parameters")
            }
            target.copy(from: saved)
        }
        optimizer.step = optimizerStep
        state = self.state
    }
}

/// `metrics.jsonl`: one JSON object per optimizer step, appended and flushed as the run goes.
final class MetricsLog {
    private let handle: FileHandle
    private let encoder: JSONEncoder

    /// Opens `path` for appending; on resume, drops lines after step `truncateAfter` (they will be redone).
    init(path: String, truncateAfter: Int) throws {
        let fm = FileManager.default
        var kept = Data()
        if truncateAfter > 0, let old = fm.contents(atPath: path) {
            for line in old.split(separator: UInt8(ascii: "\n")) {
                if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                   let step = object["step"] as? Int, step <= truncateAfter {
                    kept.append(Data(line)); kept.append(UInt8(ascii: "\n"))
                }
            }
        }
        guard fm.createFile(atPath: path, contents: kept), let handle = FileHandle(forWritingAtPath: path) else {
            throw LoRAKitError.file(path, "cannot write the metrics log")
        }
        handle.seekToEndOfFile()
        self.handle = handle
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
    }

    deinit { try? handle.close() }

    func append(_ metrics: StepMetrics) throws {
        var line = try encoder.encode(metrics)
        line.append(UInt8(ascii: "\n"))
        handle.write(line)
    }
}
