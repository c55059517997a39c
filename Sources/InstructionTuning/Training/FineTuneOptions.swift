import Foundation
import MiniGPT
import Targeting
import Tensors

/// Every setting of a fine-tuning run. Saved in each checkpoint, so `--resume DIR` alone continues the run.
///
/// Names follow the command line (DESIGN §3); defaults are PEFT's and alpaca-lora's where they have one.
public struct FineTuneOptions: Codable, Equatable, Sendable {
    public var base: String
    public var data: String
    public var out: String
    public var targets: String = "q,v"
    public var layers: String? = nil
    public var rank: Int = 8
    public var alpha: Double = 16
    public var dropout: Double = 0.05
    public var rslora: Bool = false
    /// DoRA (PEFT's `use_dora`): a trained magnitude per output on top of LoRA. Optional so that run files
    /// written before the option existed still load (nil = off).
    public var dora: Bool? = nil
    public var initialization: String = "kaiming"
    public var template: String = "alpaca"
    /// `--chat-template` for conversation records (nil: auto, the base's own or llama2; optional so that older run
    /// files still load).
    public var chatTemplate: String? = nil
    public var maskPrompt: Bool = true
    public var maxSeqLen: Int = 256
    public var skipLong: Bool = false
    public var epochs: Int = 1
    public var steps: Int? = nil
    public var batchSize: Int = 4
    public var gradAccum: Int = 1
    public var lr: Double = 3e-4
    public var lrSchedule: String = "cosine"
    public var warmupSteps: Int = 0
    public var weightDecay: Double = 0
    public var maxGradNorm: Double = 1
    public var valData: String? = nil
    public var valFraction: Double = 0
    public var evalEvery: Int = 0
    public var saveEvery: Int = 0
    public var keep: Int = 2
    public var initAdapter: String? = nil
    public var shuffle: Bool = true
    public var seed: UInt64 = 0
    public var overwrite: Bool = false
    /// `--quantize`: how the base's projections are stored (nil: none; optional so older checkpoints still load).
    public var quantize: String? = nil
    /// `--double-quant` for NF4 (nil: true).
    public var doubleQuant: Bool? = nil
    /// `--adalora`: train an AdaLoRA adapter (PEFT's ADALORA) with `rank` as its initial rank (nil: LoRA).
    public var adalora: AdaLoRASchedule? = nil
    /// `--loraplus-lr-ratio`: LoRA+ (PEFT's `create_loraplus_optimizer`), B and DoRA magnitudes at this multiple of
    /// the learning rate (nil: off).
    public var loraplusLrRatio: Double? = nil

    public init(base: String, data: String, out: String) {
        self.base = base
        self.data = data
        self.out = out
    }

    /// The chat template of this run's conversation records (`--chat-template`, auto by default).
    public func resolvedChatTemplate() throws -> ChatTemplate {
        try ChatTemplate.resolve(chatTemplate ?? "auto", base: base)
    }

    /// These options with a data directory (mlx-lm's layout) replaced by its files: `train.jsonl` for `data`, and
    /// `valid.jsonl`, when it is there, for `valData` unless `--val-data` or `--val-fraction` says otherwise.
    public func resolvingDataDirectory() throws -> FineTuneOptions {
        guard DataDirectory.isDirectory(data) else { return self }
        var resolved = self
        resolved.data = try DataDirectory.resolve(data, split: .train)
        if valData == nil && valFraction == 0 { resolved.valData = DataDirectory.file(.valid, in: data) }
        return resolved
    }

    /// `--init pissa` or `--init pissa_niter_K`: the adapter starts from the base's singular vectors.
    public var isPiSSA: Bool { AdapterInitialization.pissa(method: initialization) != nil }

    /// Checks values a user can get wrong, before any work starts.
    public func validate() throws {
        func fail(_ m: String) -> LoRAKitError { LoRAKitError(m) }
        if rank <= 0 { throw fail("--rank must be positive, got \(rank)") }
        if !(alpha > 0) { throw fail("--alpha must be positive, got \(alpha)") }
        if !(dropout >= 0 && dropout < 1) { throw fail("--dropout must be in [0, 1), got \(dropout)") }
        if !["kaiming", "gaussian"].contains(initialization) && !isPiSSA {
            throw fail("--init must be kaiming, gaussian, pissa or pissa_niter_K (K power iterations, K ≥ 0), got '\(initialization)'")
        }
        if isPiSSA && initAdapter != nil {
            throw fail("--init \(initialization) initialises a new adapter from the base weights; it cannot start from --init-adapter")
        }
        if dora == true {
            // What DoRA does not combine with, said before any work starts.
            if initialization != "kaiming" && initialization != "gaussian" {
                throw fail("--dora works with --init kaiming or gaussian only, got '\(initialization)'")
            }
        }
        if maxSeqLen < 2 { throw fail("--max-seq-len must be at least 2, got \(maxSeqLen)") }
        if epochs < 1 { throw fail("--epochs must be at least 1, got \(epochs)") }
        if let steps, steps < 1 { throw fail("--steps must be at least 1, got \(steps)") }
        if batchSize < 1 { throw fail("--batch-size must be at least 1, got \(batchSize)") }
        if gradAccum < 1 { throw fail("--grad-accum must be at least 1, got \(gradAccum)") }
        if !(lr > 0) { throw fail("--lr must be positive, got \(lr)") }
        if LearningRateSchedule.Kind(rawValue: lrSchedule) == nil {
            throw fail("--lr-schedule must be constant, linear or cosine, got '\(lrSchedule)'")
        }
        if warmupSteps < 0 { throw fail("--warmup-steps must be >= 0, got \(warmupSteps)") }
        if !(weightDecay >= 0) { throw fail("--weight-decay must be >= 0, got \(weightDecay)") }
        if !(maxGradNorm >= 0) { throw fail("--max-grad-norm must be >= 0 (0 disables clipping), got \(maxGradNorm)") }
        if !(valFraction >= 0 && valFraction < 1) { throw fail("--val-fraction must be in [0, 1), got \(valFraction)") }
        if valData != nil && valFraction > 0 { throw fail("give --val-data or --val-fraction, not both") }
        if evalEvery < 0 || saveEvery < 0 { throw fail("--eval-every and --save-every must be >= 0") }
        if keep < 1 { throw fail("--keep must be at least 1, got \(keep)") }
        _ = try quantization
        if let ratio = loraplusLrRatio {
            if !(ratio > 0) { throw fail("--loraplus-lr-ratio must be positive, got \(ratio)") }
            if adalora != nil { throw fail("--loraplus-lr-ratio does not apply to --adalora (PEFT's LoRA+ groups LoRA's A and B)") }
        }
        if let adalora {
            try adalora.validate(initialRank: rank, totalSteps: steps)
            if dora == true { throw fail("--dora and --adalora do not combine (PEFT's AdaLoRA refuses DoRA)") }
            if rslora { throw fail("--rslora does not apply to --adalora (AdaLoRA scales by alpha / --rank, as PEFT)") }
            if initialization != "kaiming" {
                throw fail("--init \(initialization) does not apply to --adalora (AdaLoRA starts as PEFT: E = 0, A and B ~ N(0, 0.02²))")
            }
        }
    }

    /// The storage of the base's projections these options ask for.
    public var quantization: BaseQuantization {
        get throws { try BaseQuantization(scheme: quantize ?? "none", doubleQuant: doubleQuant ?? true) }
    }
}
