import Foundation
import MiniGPT
import Targeting
import Tensors

/// One finished run of an ablation: a row of `results.csv`.
public struct AblationResult: Codable, Equatable, Sendable {
    public var targets: String
    public var rank: Int
    public var trainableParams: Int
    public var seed: UInt64
    public var trainLoss: Double
    public var valLoss: Double
    public var exactMatch: Double
    public var tokensPerSecond: Double
    public var peakRSSMiB: Double

    public static let csvHeader = "targets,rank,trainable_params,seed,train_loss,val_loss,exact_match,tokens_per_s,peak_rss_mib"

    public var csvLine: String {
        String(format: "\"%@\",%d,%d,%llu,%.6f,%.6f,%.4f,%.1f,%.1f", targets, rank, trainableParams, seed, trainLoss,
               valLoss, exactMatch, tokensPerSecond, peakRSSMiB)
    }
}

/// Runs every entry of a plan over several seeds with the same training options, then evaluates each adapter.
public struct AblationRunner {
    public let plan: AblationPlan
    public let training: FineTuneOptions
    public let seeds: Int
    public let out: String
    /// Exact match is measured on at most this many validation records (greedy generation is the slow part).
    public var evalLimit: Int = 100
    /// Gradient checkpointing in every run (`LlamaModel.gradientCheckpointing`): less memory, the same results.
    public var gradientCheckpointing = false
    /// Set when this runner continues an ablation in `out` (`resume(directory:)`): finished runs are read back,
    /// an interrupted one continues from its checkpoint.
    private var continuing = false

    public init(plan: AblationPlan, training given: FineTuneOptions, seeds: Int, out: String) throws {
        guard seeds >= 1 else { throw LoRAKitError("--seeds must be at least 1, got \(seeds)") }
        let training = try given.resolvingDataDirectory()
        guard training.valData != nil || training.valFraction > 0 else {
            throw LoRAKitError("an ablation compares validation results: give --val-data or --val-fraction (or a data "
                + "directory with valid.jsonl)")
        }
        self.plan = plan
        self.training = training
        self.seeds = seeds
        self.out = out
    }

    /// Continues the ablation in `directory` with the plan and options it was started with.
    public static func resume(directory: String) throws -> AblationRunner {
        var path = directory
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        let state = try AblationState.read(from: path)
        var runner = try AblationRunner(plan: state.plan, training: state.training, seeds: state.seeds, out: path)
        runner.evalLimit = state.evalLimit
        runner.continuing = true
        return runner
    }

    /// An ablation stopped between two runs or inside one (Ctrl-C, SIGTERM), with everything finished kept:
    /// `resume(directory:)` continues it.
    public struct Interrupted: Error, Sendable {
        /// Runs finished, of all the ablation's runs.
        public var finished: Int
        public var total: Int
        /// The run that was stopped mid-training, with where it saved; nil when the stop came between runs.
        public var run: TrainingInterrupted?
        public var directory: String
    }

    public enum Event {
        case starting(index: Int, total: Int, entry: AblationPlan.Entry, seed: UInt64)
        case training(TrainingEvent)
        case finished(AblationResult)
    }

    /// Trains and evaluates every (entry, seed); writes results.csv as rows finish, then results.md and plot.svg.
    /// `stopRequested` is asked between runs and before every training step; once it says yes the ablation stops
    /// with `Interrupted`, the stopped run saved at its step.
    public func run(_ onEvent: (Event) -> Void = { _ in },
                    stopRequested: () -> Bool = { false }) throws -> [AblationResult] {
        let base: FineTuneOptions
        if continuing {
            base = training
        } else {
            try FileManager.default.createDirectory(atPath: out + "/runs", withIntermediateDirectories: true)
            base = try fixedSplit()
            try AblationState(runner: self, training: base).write(to: out)
        }
        var results: [AblationResult] = []
        let total = plan.entries.count * seeds
        var index = 0
        for entry in plan.entries {
            for s in 0..<seeds {
                let seed = training.seed &+ UInt64(s)
                index += 1
                onEvent(.starting(index: index, total: total, entry: entry, seed: seed))
                var options = base
                options.targets = entry.targets.map(\.rawValue).joined(separator: ",")
                options.rank = entry.rank
                options.seed = seed
                options.initAdapter = nil
                options.overwrite = true
                options.out = out + "/runs/\(entry.name.replacingOccurrences(of: ",", with: "+"))-r\(entry.rank)-s\(seed)"
                if continuing, let finished = AblationState.finishedResult(in: options.out) {
                    results.append(finished)
                    onEvent(.finished(finished))
                    continue
                }
                if stopRequested() {
                    throw Interrupted(finished: results.count, total: total, run: nil, directory: out)
                }
                // A run of a continued ablation that had started goes on from its checkpoint (or its start).
                let started = continuing && FileManager.default.fileExists(atPath: options.out + "/" + TrainerCheckpoint.runFileName)
                let checkpoint = started ? try TrainerCheckpoint.latest(in: options.out) : nil
                let tuner = try FineTuner(options: checkpoint?.options ?? options, resume: checkpoint)
                tuner.model.gradientCheckpointing = gradientCheckpointing
                let summary: TrainingSummary
                do {
                    summary = try tuner.run({ onEvent(.training($0)) }, stopRequested: stopRequested)
                } catch let stop as TrainingInterrupted {
                    throw Interrupted(finished: results.count, total: total, run: stop, directory: out)
                }
                var evaluator = Evaluator(model: tuner.model, tokenizer: tuner.tokenizer,
                                          template: try PromptTemplate.named(options.template))
                evaluator.maxSeqLen = options.maxSeqLen
                let records = try validationRecords(options)
                if options.chatTemplate != nil || records.contains(where: { $0.messages != nil }) {
                    evaluator.chatTemplate = try options.resolvedChatTemplate()
                }
                let report = try evaluator.evaluate(Array(records.prefix(evalLimit)))
                let result = AblationResult(targets: entry.name, rank: entry.rank,
                                            trainableParams: entry.trainableParameters, seed: seed,
                                            trainLoss: summary.finalLoss, valLoss: try tuner.validationLoss(),
                                            exactMatch: report.exactMatch, tokensPerSecond: summary.tokensPerSecond,
                                            peakRSSMiB: summary.peakRSSMiB)
                try AblationState.writeResult(result, in: options.out)
                results.append(result)
                try AblationReport.writeCSV(results, to: out + "/results.csv")
                onEvent(.finished(result))
            }
        }
        try AblationReport(results: results, skipped: plan.skipped).write(to: out)
        return results
    }

    private func validationRecords(_ options: FineTuneOptions) throws -> [InstructionRecord] {
        try InstructionDataset.load(path: options.valData ?? options.data)
    }

    /// Every run must see the same validation records whatever its seed: a `--val-fraction` split is made once,
    /// with the first seed, and written beside the results.
    private func fixedSplit() throws -> FineTuneOptions {
        var options = training
        guard options.valData == nil else { return options }
        let records = try InstructionDataset.load(path: options.data)
        let (train, val) = try Batcher.split(records, valFraction: options.valFraction, seed: options.seed)
        options.data = out + "/train.json"
        options.valData = out + "/val.json"
        options.valFraction = 0
        try InstructionDataset.write(train, to: options.data)
        try InstructionDataset.write(val, to: options.valData ?? "")
        return options
    }
}
