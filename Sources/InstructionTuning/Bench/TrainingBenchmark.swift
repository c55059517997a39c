import Checkpoints
import Foundation
import MiniGPT
import Targeting
import Tensors

/// What `lora bench` prints: one JSON object with the reference script's keys and LoRAKit's extras.
public struct BenchmarkResult: Codable, Sendable {
    public var impl = "lora"
    /// All parameters of the model (base and adapters), as the reference counts them before PEFT wraps the model.
    public var params: Int
    /// Adapter parameters (every A and B).
    public var trainable: Int
    public var tokensPerSecond: Double
    /// Mean seconds per timed step, and the median of the steps (steadier on a noisy machine).
    public var stepSeconds: Double
    public var stepSecondsMedian: Double
    public var peakRSSMiB: Double
    /// Matrix and attention FLOPs per trained token (DESIGN §5), and what the timed steps achieved per second.
    public var flopsPerToken: Double
    public var gflops: Double
    /// `cblas_sgemm`'s best in this process, with the same threads, and `gflops` as a share of it (the issue's
    /// yardstick; LoRAKit's own kernel does not count towards it).
    public var sgemmPeakGflops: Double
    public var sgemmFraction: Double
    public var openblasCore: String
    /// The kernel the large products ran on: "lorakit-avx2" or "openblas" (`--gemm`).
    public var gemm = GEMM.kernelInUse
    /// `OPENBLAS_CORETYPE` as the process saw it ("" when unset): which kernels the figures are for.
    public var openblasCoretype: String
    public var threads: Int
    /// Mean loss of the last timed step (about ln(vocab) for random tokens): shows the step computed something.
    public var loss: Double
    /// How the base's projections are stored (`--quantize`), their bytes as stored and in F32.
    public var quantize = "none"
    public var baseWeightBytes = 0
    public var baseWeightBytesF32 = 0

    /// `baseWeightBytes / baseWeightBytesF32`.
    public var baseWeightFraction = 1.0
    /// Whether the adapters were DoRA (`--dora`).
    public var dora = false
    /// Whether the step ran with gradient checkpointing (`--grad-checkpoint`; the FLOP count stays without it).
    public var gradCheckpoint = false

    enum CodingKeys: String, CodingKey {
        case impl, params, trainable, threads, loss, gemm, dora
        case gradCheckpoint = "grad_checkpoint"
        case tokensPerSecond = "tokens_per_s", stepSeconds = "step_s", stepSecondsMedian = "step_s_median"
        case peakRSSMiB = "peak_rss_mib", flopsPerToken = "flops_per_token", gflops
        case sgemmPeakGflops = "sgemm_peak_gflops", sgemmFraction = "sgemm_fraction"
        case openblasCore = "openblas_core", openblasCoretype = "openblas_coretype"
        case quantize, baseWeightBytes = "base_weight_bytes", baseWeightBytesF32 = "base_weight_bytes_f32"
        case baseWeightFraction = "base_weight_fraction"
    }

    /// The result as one line of JSON (keys sorted, numbers rounded for reading).
    public func jsonLine() throws -> String {
        var rounded = self
        func round(_ x: Double, _ places: Double) -> Double { (x * places).rounded() / places }
        rounded.tokensPerSecond = round(tokensPerSecond, 10)
        rounded.stepSeconds = round(stepSeconds, 10_000)
        rounded.stepSecondsMedian = round(stepSecondsMedian, 10_000)
        rounded.peakRSSMiB = round(peakRSSMiB, 10)
        rounded.gflops = round(gflops, 10)
        rounded.sgemmPeakGflops = round(sgemmPeakGflops, 10)
        rounded.sgemmFraction = round(sgemmFraction, 1_000)
        rounded.loss = round(loss, 10_000)
        rounded.baseWeightFraction = round(baseWeightFraction, 10_000)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(rounded), as: UTF8.self)
    }
}

/// LoRA training throughput on a random model: `lora bench`.
///
/// Builds random weights (`LlamaWeights.random`), attaches LoRA adapters with non-zero B (so the low-rank path
/// computes something real), draws random tokens, and times full optimizer steps — forward, backward, clipping,
/// AdamW — through the code `lora finetune` runs (`LlamaModel.loss(backward: true)`, `clipGradientNorm`,
/// `AdamW`). The step mirrors the reference: `labels = input_ids`, so every position but the last of each
/// sequence carries a loss; AdamW at lr 1e-4 with PyTorch's default weight decay 0.01; alpha = 2·rank.
public enum TrainingBenchmark {
    /// Runs the benchmark. `onStep` sees each step's seconds (warmup included), for progress output.
    public static func run(_ options: BenchmarkOptions, onStep: (_ step: Int, _ seconds: Double) -> Void = { _, _ in })
        throws -> BenchmarkResult {
        try options.validate()
        Threads.set(options.threads)
        GEMM.kernel = try options.kernel
        // The ceiling before and after the run, the better of the two (a noisy machine can spoil one): the buffers
        // of the first are freed before the model exists, the second runs after the peak RSS is read.
        let ceilingBefore = SGEMMCeiling.measure(sizes: options.sgemmSizes)

        let config = options.modelConfig
        try config.validate()
        let quantization = try options.quantization
        // A quantized base is built projection by projection: its F32 form never exists whole.
        let weights = quantization == .none ? LlamaWeights.random(config: config, seed: options.seed).weights
            : try LlamaWeights.random(config: config, seed: options.seed, quantization: quantization)
        let model = LlamaModel(weights: weights)
        model.gradientCheckpointing = options.gradCheckpoint
        let targets = try TargetSelection.parseTargets(options.targets)
        let loraConfig = LoRAConfig(targets: targets, layers: nil, r: options.rank, loraAlpha: Double(2 * options.rank),
                                    useDora: options.dora)
        // DoRA's magnitudes start at the base's row norms, so the set is built against the base
        let adapters = try AdapterSet(config: loraConfig, dims: model.dims, initialization: .random, seed: options.seed,
                                      base: options.dora ? weights : nil)
        try adapters.attach(to: model)
        let optimizer = AdamW(parameterCount: adapters.trainableCount, weightDecay: 0.01)

        var rng = RandomGenerator(seed: options.seed ^ 0x5EED)
        let sequences = (0..<options.batch).map { _ in
            (0..<options.seq).map { _ in Int32(truncatingIfNeeded: rng.next() % UInt64(options.vocab)) }
        }
        let batch = TokenBatch(sequences: sequences)
        let gradScale = 1 / Float(batch.targetCount)

        var timed: [Double] = []
        var loss = 0.0
        for step in 0..<(options.warmup + options.steps) {
            let started = DispatchTime.now().uptimeNanoseconds
            adapters.zeroGradients()
            let result = try model.loss(batch, backward: true, gradScale: gradScale, training: true)
            clipGradientNorm(adapters.gradients, maxNorm: 1)
            optimizer.update(parameters: adapters.parameters, gradients: adapters.gradients, lr: 1e-4)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            loss = result.sum / Double(max(1, result.count))
            guard loss.isFinite else { throw LoRAKitError("benchmark step \(step + 1): the loss is not finite (\(loss))") }
            if step >= options.warmup { timed.append(seconds) }
            onStep(step, seconds)
        }

        let peakRSS = peakResidentMiB()
        let ceiling = max(ceilingBefore, SGEMMCeiling.measure(sizes: options.sgemmSizes))
        let total = timed.reduce(0, +)
        let tokensPerStep = Double(batch.rows)
        let flops = flopsPerToken(model: model, adapters: adapters, seqLen: options.seq)
        let tokensPerSecond = tokensPerStep * Double(timed.count) / max(total, 1e-12)
        let gflops = flops * tokensPerSecond / 1e9
        var result = BenchmarkResult(
            params: weights.parameterCount + adapters.trainableCount, trainable: adapters.trainableCount,
            tokensPerSecond: tokensPerSecond, stepSeconds: total / Double(timed.count),
            stepSecondsMedian: median(timed), peakRSSMiB: peakRSS, flopsPerToken: flops, gflops: gflops,
            sgemmPeakGflops: ceiling, sgemmFraction: ceiling > 0 ? gflops / ceiling : 0,
            openblasCore: Threads.blasCore,
            openblasCoretype: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "",
            threads: Threads.count, loss: loss)
        result.quantize = options.quantize
        result.dora = options.dora
        result.gradCheckpoint = options.gradCheckpoint
        (result.baseWeightBytes, result.baseWeightBytesF32) = weights.projectionBytes
        result.baseWeightFraction = Double(result.baseWeightBytes) / Double(max(1, result.baseWeightBytesF32))
        return result
    }

    /// FLOPs of one trained token (DESIGN §5): 2 per weight for the forward through every matrix (LM head included),
    /// 2 more per frozen weight the gradient flows back through (the LM head and the blocks from the lowest adapted
    /// one up), 6 per adapter weight, and causal attention's 2·T·(H·hd) forward and 4·T·(H·hd) backward per block
    /// (T/2 keys per query on average, two products each way).
    public static func flopsPerToken(model: LlamaModel, adapters: AdapterSet, seqLen: Int) -> Double {
        let d = model.dims
        let lowest = adapters.adapters.map(\.site.layer).min() ?? d.layers
        let blockMatrices = Double(d.dim * d.qDim * 2 + d.dim * d.kvDim * 2 + d.dim * d.ffnDim * 3)
        let head = Double(d.vocab * d.dim)
        let forward = 2 * (Double(d.layers) * blockMatrices + head)
        let backward = 2 * (Double(d.layers - lowest) * blockMatrices + head)
        let lora = 6 * Double(adapters.trainableCount)
        let attention = Double(seqLen * d.qDim) * (2 * Double(d.layers) + 4 * Double(d.layers - lowest))
        return forward + backward + lora + attention
    }

    /// Writes the benchmark's random base model (the weights `run` trains on) as a Hugging Face directory.
    public static func saveModel(_ options: BenchmarkOptions, directory: String) throws {
        try options.validate()
        let config = options.modelConfig
        try config.validate()
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw LoRAKitError.file(directory, "cannot create the model directory (\(error.localizedDescription))")
        }
        try LlamaWeights.random(config: config, seed: options.seed).weights.save(directory: directory)
    }

    private static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}
