import ArgumentParser
import Foundation
import InstructionTuning
import Targeting
import Tensors

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a base model on instruction data with LoRA; writes a PEFT adapter.",
        discussion: """
            Data is a JSON array or JSONL of records: {"instruction", "input" (optional), "output"} (Alpaca, put into \
            --template), {"prompt", "completion"} (the prompt as it is, no template), {"text"} (every token \
            learned) or {"messages": [{"role", "content"}, …]} (a conversation in --chat-template, every assistant \
            message learned). The output \
            directory gets adapter_config.json and adapter_model.safetensors (Hugging Face PEFT's layout), \
            metrics.jsonl and checkpoint-N directories for --resume. Options can also come from --config FILE.yaml \
            (keys are option names, e.g. `rank: 8`, `lr-schedule: cosine`); flags on the command line win.
            """)

    @Option(help: "Base model: a Hugging Face directory (config.json, model.safetensors, tokenizer.model) or a llama.cpp GGUF file.") var base: String?
    @Option(help: "Training data: JSON array or JSONL of instruction/input/output, prompt/completion, text or messages records, or a directory in mlx-lm's layout (train.jsonl, and valid.jsonl for validation).") var data: String?
    @Option(help: "Output directory for the adapter, checkpoints and metrics.") var out: String?
    @Option(help: "Projections to adapt: q,k,v,o,gate,up,down, attn, ffn, all, or HF names (q_proj …).")
    var targets: String = "q,v"
    @OptionGroup var training: TrainingOptions
    @OptionGroup var quantization: QuantizationOptions
    @OptionGroup var adaLoRA: AdaLoRAOptions
    @Option(help: "Start from an existing PEFT adapter (its targets, rank and alpha are used).") var initAdapter: String?
    @Option(help: "Continue the interrupted run in this output directory (other options come from its checkpoint).")
    var resume: String?
    @Flag(help: "Replace --out if it exists.") var overwrite = false
    @Option(help: "A YAML file of options; command-line flags override it.") var config: String?
    @OptionGroup var gradCheckpoint: GradientCheckpointOption
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if resume == nil && (base == nil || data == nil || out == nil) {
            throw ValidationError("--base, --data and --out are required (or --resume DIR)")
        }
    }

    func options() throws -> FineTuneOptions {
        var o = training.options(base: base ?? "", data: data ?? "", out: out ?? "")
        o.targets = targets
        o.initAdapter = initAdapter
        o.overwrite = overwrite
        o.adalora = adaLoRA.schedule
        if quantization.quantize != "none" || !quantization.doubleQuant {
            o.quantize = quantization.quantize
            o.doubleQuant = quantization.doubleQuant
        }
        return o
    }

    func run() throws {
        runtime.apply()
        let tuner: FineTuner
        if let resume {
            let checkpoint = try TrainerCheckpoint.latest(in: resume)
            printError("resuming \(checkpoint.options.out) from \(checkpoint.directory)")
            tuner = try FineTuner(options: checkpoint.options, resume: checkpoint)
        } else {
            tuner = try FineTuner(options: try options())
        }
        tuner.model.gradientCheckpointing = gradCheckpoint.enabled
        let weights = tuner.model.weights
        if let template = tuner.conversationTemplate {
            printError("conversations: written in the \(template.name) chat template"
                       + (tuner.options.chatTemplate == nil ? " (--chat-template auto)" : ""))
        }
        if weights.isQuantized {
            let bytes = weights.projectionBytes
            printError(String(format: "base: projections stored as %@, %.2f MiB (%.1f%% of %.2f MiB in F32)",
                              try tuner.options.quantization.description, Double(bytes.stored) / 1_048_576,
                              100 * Double(bytes.stored) / Double(max(1, bytes.f32)), Double(bytes.f32) / 1_048_576))
        }
        let printer = TrainingPrinter(describeData: { train, validation, truncated, skipped in
            "data: \(train) training examples, \(validation) validation; \(truncated) truncated, \(skipped) skipped (--max-seq-len \(tuner.options.maxSeqLen))"
        }, parameterNoun: "adapter parameters")
        Interruption.install()
        let summary: TrainingSummary
        do {
            summary = try tuner.run(printer.handle, stopRequested: { Interruption.isRequested })
        } catch let stop as TrainingInterrupted {
            throw Interruption.exit(Interruption.describe(stop, saved: " (its adapter files load as a PEFT adapter as they are)"),
                                    resume: "lora finetune --resume \(stop.runDirectory)")
        }
        print(TrainingPrinter.summary(summary, what: "adapter", validationLabel: "best validation loss"))
        if let set = tuner.adapters as? AdaLoRASet {
            // What a LoRA run at the same final budget needs: --rank target_r on the same targets.
            let budget = set.budgetSummary
            print("AdaLoRA: \(budget.triplets) triplets kept over \(set.adapters.count) modules (target_r \(set.config.targetR)), \(budget.parameters) adapter parameters; LoRA at the same rank budget: --rank \(set.config.targetR), \(budget.loraParameters) parameters")
        }
    }
}

/// The LoRA and training options `finetune` and `ablate` share.
struct TrainingOptions: ParsableArguments {
    @Option(help: "Blocks that get adapters: all, 0-3,7 or last:4.") var layers: String?
    @Option(help: "LoRA rank r.") var rank: Int = 8
    @Option(help: "LoRA alpha; the scale is alpha / r (alpha / √r with --rslora).") var alpha: Double = 16
    @Option(help: "Dropout on the adapter's input, in [0, 1).") var dropout: Double = 0.05
    @Flag(help: "Rank-stabilised LoRA: scale alpha / √r.") var rslora = false
    @Flag(help: "DoRA (PEFT's use_dora): each adapted row rescaled to a trained magnitude, m ⊙ (W + s·B·A) / ‖W + s·B·A‖.")
    var dora = false
    @Option(name: .customLong("init"), help: "Initialisation: kaiming (PEFT's default) or gaussian A with B = 0, or pissa (A, B from the top singular vectors of W; trains on the residual; saved as a rank-2r LoRA for the original base), or pissa_niter_K (the same from a randomized SVD with K power iterations: fast on large weights).")
    var initialization: String = "kaiming"
    @Option(help: "Prompt template: alpaca, or a JSON file with prompt_input and prompt_no_input.")
    var template: String = "alpaca"
    @Option(help: "Chat template for {\"messages\": [{\"role\", \"content\"}]} records: auto (the base's own, from its tokenizer_config.json; llama2 if it has none), llama2, mistral, zephyr, or a JSON file with user, assistant (and system) texts holding {content}.")
    var chatTemplate: String = "auto"
    @Option(help: "Loss on the response only (true) or on prompt and response (false).") var maskPrompt: Bool = true
    @Option(help: "Longest example in tokens; longer ones are truncated (or skipped with --skip-long).")
    var maxSeqLen: Int = 256
    @Flag(help: "Skip examples longer than --max-seq-len instead of truncating them.") var skipLong = false
    @Option(help: "Passes over the training data (ignored when --steps is given).") var epochs: Int = 1
    @Option(help: "Optimizer steps (overrides --epochs).") var steps: Int?
    @Option(help: "Examples per micro-batch.") var batchSize: Int = 4
    @Option(help: "Micro-batches per optimizer step.") var gradAccum: Int = 1
    @Option(help: "Peak learning rate.") var lr: Double = 3e-4
    @Option(help: "Learning-rate schedule after warmup: constant, linear or cosine.") var lrSchedule: String = "cosine"
    @Option(help: "LoRA+ (PEFT's create_loraplus_optimizer): lora_B (and DoRA magnitudes) learn at this multiple of --lr; the paper suggests 16.")
    var loraplusLrRatio: Double?
    @Option(help: "Linear warmup steps from 0.") var warmupSteps: Int = 0
    @Option(help: "AdamW decoupled weight decay.") var weightDecay: Double = 0
    @Option(help: "Clip the global gradient norm to this (0 disables clipping).") var maxGradNorm: Double = 1
    @Option(help: "Validation data file (same format as --data).") var valData: String?
    @Option(help: "Fraction of --data held out for validation when --val-data is not given.") var valFraction: Double = 0
    @Option(help: "Compute the validation loss every N steps (0: only at the end).") var evalEvery: Int = 0
    @Option(help: "Save a checkpoint every N steps (0: only at the end).") var saveEvery: Int = 0
    @Option(help: "Checkpoints to keep.") var keep: Int = 2
    @Option(help: "Shuffle the training data each epoch.") var shuffle: Bool = true
    @Option(help: "Random seed (initialisation, shuffling, dropout).") var seed: UInt64 = 0

    func options(base: String, data: String, out: String) -> FineTuneOptions {
        var o = FineTuneOptions(base: base, data: data, out: out)
        o.layers = layers; o.rank = rank; o.alpha = alpha; o.dropout = dropout
        o.rslora = rslora; o.dora = dora ? true : nil; o.initialization = initialization; o.template = template
        o.chatTemplate = chatTemplate == "auto" ? nil : chatTemplate; o.maskPrompt = maskPrompt
        o.maxSeqLen = maxSeqLen; o.skipLong = skipLong; o.epochs = epochs; o.steps = steps
        o.batchSize = batchSize; o.gradAccum = gradAccum; o.lr = lr; o.lrSchedule = lrSchedule
        o.warmupSteps = warmupSteps; o.loraplusLrRatio = loraplusLrRatio; o.weightDecay = weightDecay; o.maxGradNorm = maxGradNorm
        o.valData = valData; o.valFraction = valFraction; o.evalEvery = evalEvery; o.saveEvery = saveEvery
        o.keep = keep; o.shuffle = shuffle; o.seed = seed
        return o
    }
}
