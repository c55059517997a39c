import ArgumentParser
import Foundation
import InstructionTuning
import Tensors

struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a small LLaMA model from scratch on a text corpus; writes a Hugging Face model directory.",
        discussion: """
            Every parameter is trained (AdamW, linear warmup then cosine decay). Paragraphs of the corpus (text \
            between blank lines) become [BOS] text [EOS] in one token stream; training windows are drawn from it at \
            seeded random offsets, the last --val-fraction is held out. The output directory gets config.json, \
            model.safetensors and tokenizer.model, plus metrics.jsonl and checkpoint-N directories for --resume.
            """)

    @Option(help: "UTF-8 text corpus.") var corpus: String?
    @Option(help: "SentencePiece model (from `lora tokenizer train`); copied into the output.") var tokenizer: String?
    @Option(help: "Output model directory.") var out: String?
    @Option(help: "Hidden size.") var dim: Int = 128
    @Option(help: "Number of blocks.") var layers: Int = 4
    @Option(help: "Attention heads.") var heads: Int = 4
    @Option(help: "Key/value heads (grouped-query attention; default: --heads).") var kvHeads: Int?
    @Option(help: "FFN width (default: 8/3·dim rounded up to 32).") var hidden: Int?
    @Option(help: "Context length recorded as max_position_embeddings.") var context: Int = 256
    @Option(help: "Tie the LM head to the embedding.") var tieEmbeddings: Bool = true
    @Option(help: "RoPE base.") var ropeTheta: Double = 10000
    @Option(help: "Tokens per training window.") var seqLen: Int = 128
    @Option(help: "Windows per step.") var batchSize: Int = 16
    @Option(help: "Optimizer steps.") var steps: Int = 1000
    @Option(help: "Peak learning rate.") var lr: Double = 1e-3
    @Option(help: "Final learning rate as a fraction of --lr (cosine decay).") var minLRRatio: Double = 0.1
    @Option(help: "Linear warmup steps.") var warmupSteps: Int = 50
    @Option(help: "AdamW decoupled weight decay.") var weightDecay: Double = 0
    @Option(help: "Clip the global gradient norm (0 disables).") var maxGradNorm: Double = 1
    @Option(help: "Fraction of the corpus held out for validation.") var valFraction: Double = 0.02
    @Option(help: "Validation loss every N steps (0: at the end only).") var evalEvery: Int = 100
    @Option(help: "Checkpoint every N steps (0: at the end only).") var saveEvery: Int = 0
    @Option(help: "Checkpoints to keep.") var keep: Int = 2
    @Option(help: "Random seed (initialisation and data order).") var seed: UInt64 = 0
    @Flag(help: "Replace --out if it exists.") var overwrite = false
    @Option(help: "Continue the interrupted run in this output directory.") var resume: String?
    @Option(help: "A YAML file of options; command-line flags override it.") var config: String?
    @OptionGroup var gradCheckpoint: GradientCheckpointOption
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if resume == nil && (corpus == nil || tokenizer == nil || out == nil) {
            throw ValidationError("--corpus, --tokenizer and --out are required (or --resume DIR)")
        }
    }

    func run() throws {
        runtime.apply()
        let trainer: Pretrainer
        if let resume {
            var (options, path) = try Pretrainer.latestCheckpoint(in: resume)
            // The run continues where it is now, even if its directory was moved.
            options.out = resume
            printError(path.map { "resuming \(resume) from \($0)" }
                       ?? "restarting \(resume) from step 0: it stopped before its first checkpoint")
            trainer = try Pretrainer(options: options, resumeFrom: path, continuingRun: true)
        } else {
            var o = PretrainOptions(corpus: corpus ?? "", tokenizer: tokenizer ?? "", out: out ?? "")
            o.dim = dim; o.layers = layers; o.heads = heads; o.kvHeads = kvHeads; o.hidden = hidden
            o.context = context; o.tieEmbeddings = tieEmbeddings; o.ropeTheta = ropeTheta; o.seqLen = seqLen
            o.batchSize = batchSize; o.steps = steps; o.lr = lr; o.minLRRatio = minLRRatio; o.warmupSteps = warmupSteps
            o.weightDecay = weightDecay; o.maxGradNorm = maxGradNorm; o.valFraction = valFraction
            o.evalEvery = evalEvery; o.saveEvery = saveEvery; o.keep = keep; o.seed = seed; o.overwrite = overwrite
            trainer = try Pretrainer(options: o)
        }
        trainer.model.gradientCheckpointing = gradCheckpoint.enabled
        let printer = TrainingPrinter(describeData: { train, validation, _, _ in
            "corpus: \(train) training tokens, \(validation) held out"
        }, parameterNoun: "parameters")
        Interruption.install()
        let summary: TrainingSummary
        do {
            summary = try trainer.run(printer.handle, stopRequested: { Interruption.isRequested })
        } catch let stop as TrainingInterrupted {
            throw Interruption.exit(Interruption.describe(stop), resume: "lora pretrain --resume \(stop.runDirectory)")
        }
        print(TrainingPrinter.summary(summary, what: "model", validationLabel: "best validation loss"))
    }
}
