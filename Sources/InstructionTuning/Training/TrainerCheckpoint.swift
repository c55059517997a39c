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
    /// Wall-clock seconds of training so far (informative only; not part of the bit-exact state).
    var elapsed: Double
    var bestValidationLoss: Double?
    /// The dropout generators of the adapter's modules, in the adapter's order.
    var dropoutRNG: [RandomGenerator]
    /// The thread count of the run: reductions split by thread, so only the same count gives the same bits.
    /// (nil in checkpoints written before it was recorded.)
    var threads: Int? = nil
    /// A fingerprint of the training and validation files, to notice data that changed under a paused run.
    var dataFingerprint: String? = nil
    /// The loss of the last step done, so a run resumed at its end still reports it (nil in older checkpoints).
    var loss: Double? = nil
}

/// A point to resume a run from: a checkpoint directory `checkpoint-STEP`, or the start of a run that was
/// stopped before its first checkpoint.
///
/// A checkpoint holds the PEFT adapter, `optimizer.safetensors` (AdamW moments) and `trainer_state.json` (the
/// run's options and `TrainerState`). It is written into a hidden temporary sibling, flushed and renamed, so it is
/// complete or absent; old ones are renamed away before they are deleted, so a kill while pruning never leaves a
/// half-deleted `checkpoint-N` either. A run directory also holds `run_options.json` from its first moment, so
/// `--resume DIR` works even before the first checkpoint.
public struct TrainerCheckpoint {
    /// The checkpoint directory, or the run directory when the run saved no checkpoint yet.
    public let directory: String
    /// The run's options; `out` is the run directory the checkpoint was found in.
    public let options: FineTuneOptions
    /// The saved position, nil when the run saved no checkpoint yet (resuming starts it over from step 0).
    let state: TrainerState?
    let optimizerStep: Int
    /// The thread count the run was started with (for a run without checkpoints).
    let runThreads: Int?

    /// The optimizer step the run continues from.
    public var step: Int { state?.step ?? 0 }

    static let stateFileName = "trainer_state.json"
    static let optimizerFileName = "optimizer.safetensors"
    /// The run's options, written when the run directory is created.
    static let runFileName = "run_options.json"
    static let format = 1

    private struct StateFile: Codable {
        var options: FineTuneOptions
        var state: TrainerState
        var optimizerStep: Int
        var format: Int
    }

    private struct RunFile: Codable {
        var options: FineTuneOptions
        var threads: Int
        var format: Int
    }

    private static func encode<Value: Encodable>(_ value: Value) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(value)
    }

    // MARK: writing

    /// Creates the run directory `options.out` atomically, holding `run_options.json` (an existing one is replaced
    /// only with `options.overwrite`, and only once the new one is complete).
    static func createRunDirectory(options: FineTuneOptions, threads: Int) throws {
        try createRunDirectory(at: options.out, overwrite: options.overwrite,
                               runFile: RunFile(options: options, threads: threads, format: format))
    }

    /// Creates the run directory `out` holding only `run_options.json` (`runFile` as JSON), in one atomic step;
    /// with `overwrite` an existing directory is swapped out only once the new one exists. Shared by fine-tuning
    /// and pretraining runs.
    static func createRunDirectory<RunOptions: Encodable>(at out: String, overwrite: Bool, runFile: RunOptions) throws {
        let parent = parentDirectory(of: out)
        do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
            throw LoRAKitError.file(parent, "cannot create the output directory's parent (\(describe(error)))")
        }
        let json = try encode(runFile)
        try AtomicFile.writeDirectory(at: out, overwrite: overwrite) { temporary in
            try AtomicFile.write(json, to: temporary + "/" + runFileName)
        }
    }

    static func save(directory: String, step: Int, options: FineTuneOptions, adapters: any TrainableAdapters, optimizer: AdamW,
                     state: TrainerState) throws -> String {
        let path = directory + "/checkpoint-\(step)"
        var current = state
        current.dropoutRNG = adapters.dropoutStates
        current.threads = Threads.count
        let json = try encode(StateFile(options: options, state: current, optimizerStep: optimizer.step, format: format))
        var temporaryPath: String?
        do {
            try AtomicFile.writeDirectory(at: path, overwrite: true) { temporary in
                temporaryPath = temporary
                try adapters.save(to: temporary, baseModelPath: options.base)
                try adapters.saveTrainingState(to: temporary)
                try SafeTensorsWriter.write([(name: "exp_avg", tensor: optimizer.firstMoment),
                                             (name: "exp_avg_sq", tensor: optimizer.secondMoment)],
                                            metadata: ["format": "pt"], to: temporary + "/" + optimizerFileName)
                // Written last: a checkpoint with a state file has everything else.
                try AtomicFile.write(json, to: temporary + "/" + stateFileName)
            }
        } catch let error as LoRAKitError {
            // Name the checkpoint, not the hidden temporary directory it was being built in (already removed).
            let reason = temporaryPath.map { error.message.replacingOccurrences(of: $0 + "/", with: "") } ?? error.message
            throw LoRAKitError.file(path, "cannot save the checkpoint, the previous ones are intact: \(reason)")
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

    /// Whether `path` holds every file of a fine-tuning checkpoint.
    static func isComplete(_ path: String) -> Bool {
        [stateFileName, optimizerFileName, LoRAConfig.fileName, AdapterSet.weightsFileName]
            .allSatisfy { FileManager.default.fileExists(atPath: path + "/" + $0) }
    }

    /// Removes all but the newest `keep` checkpoints. Each is first renamed to a hidden name (atomic), so a kill
    /// in the middle of deleting it leaves hidden debris for `removeDebris`, never a `checkpoint-N` missing files.
    static func prune(directory: String, keep: Int) throws {
        for old in list(directory: directory).dropLast(keep) {
            let doomed = directory + "/.checkpoint-\(old.step).deleting-\(getpid())"
            if rename(old.path, doomed) == 0 {
                try? FileManager.default.removeItem(atPath: doomed)
            }
        }
    }

    /// Removes what a killed run leaves behind in its directory: hidden temporary and half-deleted checkpoint
    /// directories and temporary files of AtomicFile (`.NAME.tmp-…`, `.NAME.old-…`).
    static func removeDebris(directory: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let files = [runFileName, "metrics.jsonl", LoRAConfig.fileName, AdapterSet.weightsFileName]
        for name in names where name.hasPrefix(".checkpoint-") || files.contains(where: { name.hasPrefix(".\($0).tmp-") }) {
            try? FileManager.default.removeItem(atPath: directory + "/" + name)
        }
    }

    // MARK: reading

    /// Where to resume the run in `directory`: a run's output directory (its newest complete checkpoint, or its
    /// start when it saved none yet) or one checkpoint directory.
    public static func latest(in directory: String) throws -> TrainerCheckpoint {
        var path = directory
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw LoRAKitError.file(path, "no such run directory to resume")
        }
        guard isDirectory.boolValue else {
            throw LoRAKitError.file(path, "is a file; --resume takes the --out directory of a finetune run")
        }
        if fm.fileExists(atPath: path + "/" + stateFileName) {
            return try load(checkpoint: path, runDirectory: parentDirectory(of: path))
        }
        // The newest complete checkpoint; an incomplete one (copied by hand, or damaged) is passed over.
        if let newest = list(directory: path).last(where: { isComplete($0.path) }) {
            return try load(checkpoint: newest.path, runDirectory: path)
        }
        let runPath = path + "/" + runFileName
        guard fm.fileExists(atPath: runPath) else {
            throw LoRAKitError.file(path, "holds no checkpoint-N directory and no \(runFileName); it is not the --out directory of a finetune run")
        }
        let run: RunFile = try decode(runPath, what: "run options")
        var options = run.options
        options.out = path
        return TrainerCheckpoint(directory: path, options: options, state: nil, optimizerStep: 0, runThreads: run.threads)
    }

    private static func load(checkpoint path: String, runDirectory: String) throws -> TrainerCheckpoint {
        let file: StateFile = try decode(path + "/" + stateFileName, what: "trainer state")
        var options = file.options
        options.out = runDirectory
        return TrainerCheckpoint(directory: path, options: options, state: file.state, optimizerStep: file.optimizerStep,
                                 runThreads: file.state.threads)
    }

    private static func decode<Value: Decodable>(_ path: String, what: String) throws -> Value {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw LoRAKitError.file(path, "cannot read (\(describe(error)))")
        }
        do { return try JSONDecoder().decode(Value.self, from: data) } catch {
            throw LoRAKitError.file(path, "not a LoRAKit \(what) file (\(error))")
        }
    }

    /// Puts the saved moments into `optimizer` and the saved position into `state` (nothing for a run's start).
    func restore(into optimizer: AdamW, state: inout TrainerState) throws {
        guard let saved = self.state else { return }
        let path = directory + "/" + Self.optimizerFileName
        let moments = try SafeTensorsFile(path: path)
        for (name, target) in [("exp_avg", optimizer.firstMoment), ("exp_avg_sq", optimizer.secondMoment)] {
            let tensor = try moments.tensor(name)
            guard tensor.count == target.count else {
                throw LoRAKitError.file(path, "tensor \(name) has \(tensor.count) values, the adapter has \(target.count) parameters")
            }
            target.copy(from: tensor)
        }
        optimizer.step = optimizerStep
        state = saved
    }

    static func parentDirectory(of path: String) -> String { AtomicFile.parentDirectory(of: path) }

    /// The system's reason under a Foundation error ("No space left on device"), else its description.
    static func describe(_ error: Error) -> String { AtomicFile.describe(error) }

    /// A fingerprint of the files at `paths` (size and FNV-1a 64 of the bytes): cheap next to a training step,
    /// and enough to notice a dataset edited while a run was paused.
    static func fingerprint(_ paths: [String]) -> String {
        paths.map { path -> String in
            guard let data = FileManager.default.contents(atPath: path) else { return "missing" }
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in data { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
            return "\(data.count):\(String(hash, radix: 16))"
        }.joined(separator: ",")
    }
}

/// `metrics.jsonl`: one JSON object per optimizer step, appended as the run goes.
final class MetricsLog {
    private let handle: FileHandle
    private let path: String
    private let encoder: JSONEncoder

    /// Opens `path` for appending; on resume keeps only the lines of steps up to `truncateAfter` (later ones will
    /// be redone, and a line cut short by a kill is dropped). The rewrite is atomic: a kill during it keeps the
    /// old log.
    init(path: String, truncateAfter: Int) throws {
        var kept = Data()
        if truncateAfter > 0, let old = FileManager.default.contents(atPath: path) {
            for line in old.split(separator: UInt8(ascii: "\n")) {
                if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                   let step = object["step"] as? Int, step <= truncateAfter {
                    kept.append(Data(line)); kept.append(UInt8(ascii: "\n"))
                }
            }
        }
        try AtomicFile.write(kept, to: path)
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw LoRAKitError.file(path, "cannot open the metrics log for writing")
        }
        do { try handle.seekToEnd() } catch {
            throw LoRAKitError.file(path, "cannot open the metrics log for writing (\(TrainerCheckpoint.describe(error)))")
        }
        self.handle = handle
        self.path = path
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
    }

    deinit { try? handle.close() }

    func append(_ metrics: StepMetrics) throws {
        var line = try encoder.encode(metrics)
        line.append(UInt8(ascii: "\n"))
        do { try handle.write(contentsOf: line) } catch {
            throw LoRAKitError.file(path, "cannot append to the metrics log (\(TrainerCheckpoint.describe(error)))")
        }
    }
}
