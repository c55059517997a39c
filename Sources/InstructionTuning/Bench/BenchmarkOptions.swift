import Checkpoints
import MiniGPT
import Targeting
import Tensors

/// The configuration of `lora bench`: the flags of `shared/bench/torch_peft_bench.py`, so both programs can run
/// the same model side by side (DESIGN §5).
public struct BenchmarkOptions: Codable, Equatable, Sendable {
    public var dim = 288
    public var layers = 6
    public var heads = 6
    /// Key/value heads; 0 means as many as `heads` (the reference script's convention).
    public var kvHeads = 0
    public var hidden = 768
    public var vocab = 32_000
    public var seq = 256
    public var batch = 8
    /// Projections to adapt, in either spelling (`q,v` or `q_proj,v_proj`).
    public var targets = "q_proj,v_proj"
    public var rank = 8
    /// Timed optimizer steps, after `warmup` untimed ones.
    public var steps = 5
    public var warmup = 2
    public var threads = 2
    /// Seed of the random weights, adapters and tokens.
    public var seed: UInt64 = 0
    /// Sizes of the square products that measure the `cblas_sgemm` ceiling (OpenBLAS peaks around 1–2 k).
    public var sgemmSizes = [1024, 2048]
    /// How the base's projections are stored: `none` or `nf4` (`--quantize`), with `doubleQuant` for NF4.
    public var quantize = "none"
    public var doubleQuant = true
    /// DoRA adapters instead of plain LoRA (`--dora`).
    public var dora = false
    /// Gradient checkpointing (`--grad-checkpoint`): block activations recomputed in the backward.
    public var gradCheckpoint = false
    /// The matrix-product kernel (`--gemm`): `lorakit` or `openblas` (`GEMM.Kernel`).
    public var gemm = "lorakit"

    public init() {}

    /// Throws a `LoRAKitError` naming the first flag that cannot describe a benchmark.
    public func validate() throws {
        let positive: [(String, Int)] = [("--dim", dim), ("--layers", layers), ("--heads", heads), ("--hidden", hidden),
                                         ("--vocab", vocab), ("--seq", seq), ("--batch", batch), ("--rank", rank),
                                         ("--steps", steps), ("--threads", threads)]
        for (flag, value) in positive where value < 1 {
            throw LoRAKitError("\(flag) must be at least 1, got \(value)")
        }
        if warmup < 0 { throw LoRAKitError("--warmup must be at least 0, got \(warmup)") }
        if kvHeads < 0 { throw LoRAKitError("--kv-heads must be at least 0 (0 = --heads), got \(kvHeads)") }
        if seq < 2 { throw LoRAKitError("--seq must be at least 2 (a sequence needs a next token to predict), got \(seq)") }
        if dim % heads != 0 { throw LoRAKitError("--dim \(dim) is not divisible by --heads \(heads)") }
        if (dim / heads) % 2 != 0 { throw LoRAKitError("head size \(dim / heads) (--dim / --heads) is odd; RoPE needs it even") }
        if heads % resolvedKVHeads != 0 {
            throw LoRAKitError("--heads \(heads) is not divisible by --kv-heads \(resolvedKVHeads)")
        }
        if vocab < 3 { throw LoRAKitError("--vocab must be at least 3 (BOS and EOS are ids 1 and 2), got \(vocab)") }
        if let bad = sgemmSizes.first(where: { $0 < 1 }) ?? (sgemmSizes.isEmpty ? 0 : nil) {
            throw LoRAKitError("--sgemm-sizes needs positive sizes, got \(bad)")
        }
        _ = try TargetSelection.parseTargets(targets)
        _ = try quantization
        _ = try kernel
    }

    /// The kernel named by `gemm`.
    public var kernel: GEMM.Kernel {
        get throws {
            guard let kernel = GEMM.Kernel(rawValue: gemm) else {
                let names = GEMM.Kernel.allCases.map(\.rawValue).joined(separator: ", ")
                throw LoRAKitError("unknown --gemm '\(gemm)'; choose one of \(names)")
            }
            return kernel
        }
    }

    /// The storage of the base's projections.
    public var quantization: BaseQuantization {
        get throws { try BaseQuantization(scheme: quantize, doubleQuant: doubleQuant) }
    }

    public var resolvedKVHeads: Int { kvHeads == 0 ? heads : kvHeads }

    /// The model: transformers' `LlamaConfig` defaults, an untied LM head, as the reference script builds it.
    public var modelConfig: LlamaConfig {
        LlamaConfig(vocabSize: vocab, hiddenSize: dim, intermediateSize: hidden, numHiddenLayers: layers,
                    numAttentionHeads: heads, numKeyValueHeads: resolvedKVHeads, maxPositionEmbeddings: seq,
                    tieWordEmbeddings: false)
    }
}
