import ArgumentParser
import Foundation
import InstructionTuning
import MiniGPT
import Tensors

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure LoRA training throughput on a random model; prints one JSON line.",
        discussion: """
            Takes the flags of shared/bench/torch_peft_bench.py, so the two run the same configuration side by \
            side. Prints tokens_per_s, step_s, peak_rss_mib, gflops (DESIGN §5 FLOPs per second), \
            sgemm_peak_gflops (cblas_sgemm's best in this process), params, trainable, gemm (the kernel of the \
            matrix products, --gemm) and the OpenBLAS kernel (openblas_core; openblas_coretype is the environment \
            variable as seen, "" when unset).
            With --generate N it times generation instead: the prompt, then N greedy tokens through the KV cache \
            of `lora generate` (an end-of-sequence token does not stop it), on --base DIR or on the random model \
            of the flags; tokens_per_s counts the N new tokens only.
            With --quantize nf4 the base's projections are NF4 (QLoRA); base_weight_bytes and base_weight_bytes_f32 \
            give their memory as stored and in F32, base_weight_fraction the ratio. With --dora the adapters are \
            DoRA (dora: true in the JSON; the FLOP count stays LoRA's).
            """)

    @Option(help: "Hidden size.") var dim = 288
    @Option(help: "Number of blocks.") var layers = 6
    @Option(help: "Attention heads.") var heads = 6
    @Option(help: "Key/value heads (0: as many as --heads).") var kvHeads = 0
    @Option(help: "FFN (intermediate) size.") var hidden = 768
    @Option(help: "Vocabulary size.") var vocab = 32_000
    @Option(help: "Tokens per sequence.") var seq = 256
    @Option(help: "Sequences per step.") var batch = 8
    @Option(help: "Projections to adapt: q,v or q_proj,v_proj, attn, ffn, all.") var targets = "q_proj,v_proj"
    @Option(help: "LoRA rank (alpha is 2·rank, as the reference).") var rank = 8
    @Option(help: "Timed steps.") var steps = 5
    @Option(help: "Untimed steps before them.") var warmup = 2
    @Option(help: "Threads for OpenBLAS and LoRAKit's loops.") var threads = 2
    @Option(help: "Seed of the random weights and tokens.") var seed: UInt64 = 0
    @Option(help: "Sizes of the square products that measure the sgemm ceiling, e.g. 1024,2048.")
    var sgemmSizes = "1024,2048"
    @Option(help: ArgumentHelp("Write the random base model (config.json, model.safetensors) to DIR and exit, to compare generation with other tools on the same weights.",
                               valueName: "dir"))
    var saveModel: String?
    @Option(help: "Time generation of N new tokens instead of training.") var generate: Int?
    @Option(help: "Prompt length for --generate (BOS and random ids).") var promptTokens = 16
    @Option(help: "For --generate: a model (directory or GGUF file) to load instead of random weights.") var base: String?
    @Option(help: "Matrix-product kernel: lorakit (LoRAKit's AVX2 kernel; OpenBLAS on CPUs without AVX2 and for thin products) or openblas.")
    var gemm = "lorakit"
    @Flag(help: "DoRA adapters (PEFT's use_dora) instead of plain LoRA.") var dora = false
    @Flag(help: "Print each step's time to stderr.") var verbose = false
    @OptionGroup var gradCheckpoint: GradientCheckpointOption
    @OptionGroup var quantization: QuantizationOptions

    var options: BenchmarkOptions {
        var o = BenchmarkOptions()
        o.dim = dim; o.layers = layers; o.heads = heads; o.kvHeads = kvHeads; o.hidden = hidden; o.vocab = vocab
        o.seq = seq; o.batch = batch; o.targets = targets; o.rank = rank; o.steps = steps; o.warmup = warmup
        o.threads = threads; o.seed = seed; o.gemm = gemm; o.dora = dora
        o.gradCheckpoint = gradCheckpoint.enabled
        o.quantize = quantization.quantize; o.doubleQuant = quantization.doubleQuant
        o.sgemmSizes = sgemmSizes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? 0 }
        return o
    }

    func validate() throws {
        do { try options.validate() } catch let error as LoRAKitError { throw ValidationError(error.message) }
        if let generate, generate < 1 { throw ValidationError("--generate must be at least 1, got \(generate)") }
        if promptTokens < 1 { throw ValidationError("--prompt-tokens must be at least 1, got \(promptTokens)") }
        if base != nil && generate == nil { throw ValidationError("--base goes with --generate (training runs on random weights)") }
        if saveModel != nil && generate != nil { throw ValidationError("--save-model and --generate are separate runs") }
        if dora && (generate != nil || saveModel != nil) {
            throw ValidationError("--dora goes with training runs (not --generate or --save-model)")
        }
        if gradCheckpoint.enabled && (generate != nil || saveModel != nil) {
            throw ValidationError("--grad-checkpoint goes with training runs (not --generate or --save-model)")
        }
        if saveModel != nil && quantization.quantize != "none" {
            throw ValidationError("--save-model writes the F32 model; quantize it when loading (--quantize on the command that uses it)")
        }
    }

    func run() throws {
        if let saveModel {
            try TrainingBenchmark.saveModel(options, directory: saveModel)
            printError("wrote the random model to \(saveModel)")
            return
        }
        if let generate {
            Threads.set(threads)
            GEMM.kernel = try options.kernel
            let quantization = try options.quantization
            let weights = try base.map { try BaseModel.weights($0, quantization: quantization, inMemory: true) }
                ?? LlamaWeights.random(config: options.modelConfig, seed: seed, quantization: quantization)
            let prompt = GenerationBenchmark.prompt(count: promptTokens, vocab: weights.dims.vocab,
                                                    bos: Int32(weights.config.bosTokenId), seed: seed)
            let result = try GenerationBenchmark.run(model: LlamaModel(weights: weights), prompt: prompt,
                                                     newTokens: generate)
            print(try result.jsonLine())
            return
        }
        let verbose = verbose
        let result = try TrainingBenchmark.run(options) { step, seconds in
            if verbose { printError(String(format: "step %d: %.3f s", step + 1, seconds)) }
        }
        print(try result.jsonLine())
    }
}
