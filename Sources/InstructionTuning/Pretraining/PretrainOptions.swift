import Foundation
import Tensors

/// Every setting of a pretraining run (`lora pretrain`); saved in each checkpoint for `--resume`.
public struct PretrainOptions: Codable, Equatable, Sendable {
    public var corpus: String
    public var tokenizer: String
    public var out: String
    // Model size.
    public var dim: Int = 128
    public var layers: Int = 4
    public var heads: Int = 4
    public var kvHeads: Int? = nil
    public var hidden: Int? = nil
    public var context: Int = 256
    public var tieEmbeddings: Bool = true
    public var ropeTheta: Double = 10000
    // Training.
    public var seqLen: Int = 128
    public var batchSize: Int = 16
    public var steps: Int = 1000
    public var lr: Double = 1e-3
    public var minLRRatio: Double = 0.1
    public var warmupSteps: Int = 50
    public var weightDecay: Double = 0.0
    public var maxGradNorm: Double = 1
    public var valFraction: Double = 0.02
    public var evalEvery: Int = 100
    public var saveEvery: Int = 0
    public var keep: Int = 2
    public var seed: UInt64 = 0
    public var overwrite: Bool = false

    public init(corpus: String, tokenizer: String, out: String) {
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.out = out
    }

    /// The FFN width: LLaMA's 8/3·dim rounded up to a multiple of 32, unless given.
    public var ffnDim: Int { hidden ?? ((dim * 8 / 3 + 31) / 32) * 32 }

    public func validate() throws {
        func fail(_ m: String) -> LoRAKitError { LoRAKitError(m) }
        for (name, value) in [("--dim", dim), ("--layers", layers), ("--heads", heads), ("--context", context),
                              ("--seq-len", seqLen), ("--batch-size", batchSize), ("--steps", steps), ("--keep", keep)]
        where value < 1 {
            throw fail("\(name) must be at least 1, got \(value)")
        }
        if dim % heads != 0 { throw fail("--dim \(dim) is not divisible by --heads \(heads)") }
        if (dim / heads) % 2 != 0 { throw fail("the head size dim/heads = \(dim / heads) must be even for RoPE") }
        if let kv = kvHeads, kv < 1 || heads % kv != 0 { throw fail("--kv-heads must divide --heads \(heads), got \(kv)") }
        if let h = hidden, h < 1 { throw fail("--hidden must be at least 1, got \(h)") }
        if seqLen > context { throw fail("--seq-len \(seqLen) is longer than --context \(context)") }
        if !(lr > 0) { throw fail("--lr must be positive, got \(lr)") }
        if !(minLRRatio >= 0 && minLRRatio <= 1) { throw fail("--min-lr-ratio must be in [0, 1], got \(minLRRatio)") }
        if warmupSteps < 0 { throw fail("--warmup-steps must be >= 0, got \(warmupSteps)") }
        if !(weightDecay >= 0) { throw fail("--weight-decay must be >= 0, got \(weightDecay)") }
        if !(maxGradNorm >= 0) { throw fail("--max-grad-norm must be >= 0, got \(maxGradNorm)") }
        if !(valFraction >= 0 && valFraction < 0.5) { throw fail("--val-fraction must be in [0, 0.5), got \(valFraction)") }
        if evalEvery < 0 || saveEvery < 0 { throw fail("--eval-every and --save-every must be >= 0") }
    }
}
