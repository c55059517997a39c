import ArgumentParser
import Foundation
import InstructionTuning
import MiniGPT
import Tensors

struct Ablate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Which projections should get the adapters? Fine-tune target sets at a matched parameter budget.",
        discussion: """
            The LoRA paper's Table 5: each target set (default q, k, v, o, q+k, q+v, q+k+v+o, ffn, all) gets the rank \
            whose trainable-parameter count is nearest --budget, and is trained with the same options over --seeds \
            seeds. With --ranks, each set is trained at each rank instead (Table 6). Writes results.csv, results.md \
            (mean ± std) and plot.svg into --out, and every adapter under --out/runs. Ctrl-C stops it after the \
            current step with that run saved; --resume DIR continues it, keeping the finished runs.
            """)

    @Option(help: "Base model: a Hugging Face directory (config.json, model.safetensors, tokenizer.model) or a llama.cpp GGUF file.") var base: String?
    @Option(help: "Training data: JSON array or JSONL of instruction/input/output, prompt/completion, text or messages records, or a directory in mlx-lm's layout (train.jsonl, valid.jsonl).") var data: String?
    @Option(help: "Output directory for the results and the adapters.") var out: String?
    @Option(help: "Trainable parameters per set (default: q,v at rank 8).") var budget: Int?
    @Option(parsing: .upToNextOption, help: "Target sets, each like q or q,v or ffn (default: the paper's nine).")
    var targets: [String] = []
    @Option(help: "Runs per set, with seeds --seed, --seed+1, …") var seeds: Int = 1
    @Option(help: "Sweep these ranks (e.g. 1,2,4,8,64) for the given sets instead of matching a budget.")
    var ranks: String?
    @Option(help: "Exact match is measured on at most this many validation records.") var evalLimit: Int = 100
    @Flag(help: "Replace --out if it exists.") var overwrite = false
    @Option(help: "Continue the interrupted ablation in this directory (its plan and options come from it).")
    var resume: String?
    @OptionGroup var training: TrainingOptions
    @Option(help: "A YAML file of options; command-line flags override it.") var config: String?
    @OptionGroup var gradCheckpoint: GradientCheckpointOption
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if resume == nil && (base == nil || data == nil || out == nil) {
            throw ValidationError("--base, --data and --out are required (or --resume DIR)")
        }
        if seeds < 1 { throw ValidationError("--seeds must be at least 1, got \(seeds)") }
        if let budget, budget < 1 { throw ValidationError("--budget must be positive, got \(budget)") }
        if evalLimit < 1 { throw ValidationError("--eval-limit must be at least 1, got \(evalLimit)") }
    }

    func run() throws {
        runtime.apply()
        var runner: AblationRunner
        if let resume {
            runner = try AblationRunner.resume(directory: resume)
            printError("resuming the ablation in \(runner.out)")
        } else {
            runner = try newRunner(base: base ?? "", data: data ?? "", out: out ?? "")
        }
        runner.gradientCheckpointing = gradCheckpoint.enabled
        for (name, reason) in runner.plan.skipped { printError("skipping \(name): \(reason)") }
        for entry in runner.plan.entries {
            printError("\(entry.name): rank \(entry.rank), \(entry.trainableParameters) trainable parameters")
        }
        Interruption.install()
        let progress = ProgressLine()
        var label = ""
        let show: (AblationRunner.Event) -> Void = { event in
            switch event {
            case let .starting(index, total, entry, seed):
                label = "[\(index)/\(total)] \(entry.name) r\(entry.rank) seed \(seed)"
                progress.update(label + ": training", final: false)
            case let .training(.step(m)):
                progress.update(String(format: "%@: step %d/%d loss %.4f", label, m.step, m.totalSteps, m.loss), final: false)
            case let .finished(r):
                progress.update(String(format: "%@: val loss %.4f, exact match %.3f", label, r.valLoss, r.exactMatch),
                                final: true)
            case let .training(.warning(text)):
                progress.note("warning: \(text)")
            case .training: break
            }
        }
        let results: [AblationResult]
        do {
            results = try runner.run(show, stopRequested: { Interruption.isRequested })
        } catch let stop as AblationRunner.Interrupted {
            var report = "\(stop.finished) of \(stop.total) runs finished (\(stop.directory)/results.csv)"
            if let run = stop.run { report += "; the run in \(run.runDirectory) was " + Interruption.describe(run) }
            throw Interruption.exit(report, resume: "lora ablate --resume \(stop.directory)")
        }
        print(AblationReport(results: results, skipped: runner.plan.skipped).markdown, terminator: "")
        print("results: \(runner.out)/results.csv, \(runner.out)/results.md, \(runner.out)/plot.svg")
    }

    /// A new ablation in `out`: the plan of --targets at --budget (or over --ranks) and this command's options.
    private func newRunner(base: String, data: String, out: String) throws -> AblationRunner {
        if FileManager.default.fileExists(atPath: out) {
            guard overwrite else {
                throw LoRAKitError.file(out, "already exists; pass --overwrite to replace it, or --resume \(out) to continue its ablation")
            }
            try FileManager.default.removeItem(atPath: out)
        }
        let dims = ModelDimensions(try BaseModel.config(base))
        let sets = targets.isEmpty ? AblationPlan.defaultSets : targets
        let plan: AblationPlan
        if let ranks {
            let list = try ranks.split(separator: ",").map { part -> Int in
                guard let r = Int(part.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("--ranks: '\(part)' is not a whole number")
                }
                return r
            }
            plan = try AblationPlan(sets: targets.isEmpty ? ["q,v"] : targets, ranks: list, dims: dims)
        } else {
            let defaultBudget = 8 * AblationPlan.parametersPerRank([.q, .v], dims: dims)
            plan = try AblationPlan(sets: sets, budget: budget ?? defaultBudget, dims: dims)
        }
        var runner = try AblationRunner(plan: plan, training: training.options(base: base, data: data, out: out),
                                        seeds: seeds, out: out)
        runner.evalLimit = evalLimit
        return runner
    }
}
