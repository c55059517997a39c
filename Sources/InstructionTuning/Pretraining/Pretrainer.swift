import Checkpoints
import Foundation
import MiniGPT
import Tensors
import Tokenizer

/// Full-parameter training of a MiniGPT from scratch on a text corpus: the loop of `lora pretrain`.
///
/// Every parameter gets a weight gradient (LlamaModel.weightGradients); AdamW runs over the one flat buffer that
/// holds all weights. Linear warmup, then cosine decay to `minLRRatio`·lr. The result is a Hugging Face Llama
/// directory (config.json, model.safetensors, tokenizer.model).
public final class Pretrainer {
    public let options: PretrainOptions
    /// True when this run continues the run already in `options.out` (resumed), false for a new run.
    let continuingRun: Bool
    public let config: LlamaConfig
    public let model: LlamaModel
    let parameters: Tensor
    let gradients: Tensor
    let optimizer: AdamW
    let corpus: TokenCorpus
    let validation: [TokenBatch]
    var state: PretrainState

    struct PretrainState: Codable, Equatable {
        var step: Int
        var tokens: Int
        var elapsed: Double
        var dataRNG: RandomGenerator
        var bestValidationLoss: Double?
        /// The loss of the last step done, so a run resumed at its end still reports it (nil in older checkpoints).
        var loss: Double? = nil
    }

    /// A run from scratch, or (with `resumeFrom`) from a checkpoint. `continuingRun` continues the run in
    /// `options.out` (whose directory exists) even without a checkpoint: a run stopped before its first one restarts
    /// from step 0 in place. It defaults to true with a checkpoint.
    public init(options: PretrainOptions, resumeFrom checkpoint: String? = nil, continuingRun: Bool? = nil) throws {
        try options.validate()
        self.options = options
        self.continuingRun = continuingRun ?? (checkpoint != nil)
        let tokenizer: SentencePieceTokenizer
        do { tokenizer = try SentencePieceTokenizer(modelPath: options.tokenizer) } catch { throw LoRAKitError("\(error)") }
        guard tokenizer.bosId >= 0, tokenizer.eosId >= 0 else {
            throw LoRAKitError.file(options.tokenizer, "the tokenizer has no BOS or EOS piece (train it with `lora tokenizer train`)")
        }
        config = LlamaConfig(vocabSize: tokenizer.vocabSize, hiddenSize: options.dim, intermediateSize: options.ffnDim,
                             numHiddenLayers: options.layers, numAttentionHeads: options.heads,
                             numKeyValueHeads: options.kvHeads, rmsNormEps: 1e-5,
                             maxPositionEmbeddings: options.context, tieWordEmbeddings: options.tieEmbeddings,
                             bosTokenId: Int(tokenizer.bosId), eosTokenId: Int(tokenizer.eosId),
                             ropeTheta: Float(options.ropeTheta))
        try config.validate()
        corpus = try TokenCorpus(path: options.corpus, tokenizer: tokenizer, bos: tokenizer.bosId, eos: tokenizer.eosId,
                                 valFraction: options.valFraction)
        guard corpus.trainEnd > options.seqLen + 1 else {
            throw LoRAKitError.file(options.corpus, "the corpus has \(corpus.tokens.count) tokens, too few for --seq-len \(options.seqLen)")
        }
        validation = corpus.validationBatches(batch: options.batchSize, seqLen: options.seqLen)

        let (weights, storage) = LlamaWeights.random(config: config, seed: options.seed)
        let (grads, gradStorage) = LlamaWeights.zeros(config: config)
        parameters = storage
        gradients = gradStorage
        model = LlamaModel(weights: weights)
        model.weightGradients = grads
        optimizer = AdamW(parameterCount: storage.count, weightDecay: Float(options.weightDecay))
        state = PretrainState(step: 0, tokens: 0, elapsed: 0, dataRNG: RandomGenerator(seed: options.seed &+ 1),
                              bestValidationLoss: nil)
        if let checkpoint { try restore(from: checkpoint) }
    }

    public var totalSteps: Int { options.steps }

    /// The learning rate of step `step`: warmup, then cosine to minLRRatio·lr.
    public func learningRate(at step: Int) -> Float {
        let peak = options.lr
        if step < options.warmupSteps { return Float(peak * Double(step + 1) / Double(options.warmupSteps + 1)) }
        let progress = min(1, Double(step - options.warmupSteps) / Double(max(1, options.steps - options.warmupSteps)))
        let floor = peak * options.minLRRatio
        return Float(floor + (peak - floor) * 0.5 * (1 + cos(Double.pi * progress)))
    }

    /// Trains to `steps`, writing checkpoints, `metrics.jsonl` and finally the model directory. Once
    /// `stopRequested` says yes (asked before every step) the run saves a checkpoint of where it is and throws
    /// `TrainingInterrupted`.
    public func run(_ onEvent: (TrainingEvent) -> Void = { _ in },
                    stopRequested: () -> Bool = { false }) throws -> TrainingSummary {
        let out = options.out
        let resuming = state.step > 0
        try prepareOutput(continuing: continuingRun)
        let metrics = try MetricsLog(path: out + "/metrics.jsonl", truncateAfter: resuming ? state.step : 0)
        onEvent(.dataset(train: corpus.trainEnd, validation: corpus.tokens.count - corpus.trainEnd, truncated: 0, skipped: 0))
        onEvent(.start(step: state.step, totalSteps: options.steps, trainable: parameters.count))
        let started = Date(), elapsedBefore = state.elapsed
        var lastLoss = state.loss ?? .nan
        while state.step < options.steps {
            if stopRequested() {
                throw try TrainingInterrupted.stopping(
                    at: state.step, of: options.steps, runDirectory: out,
                    isSaved: { FileManager.default.fileExists(atPath: $0 + "/pretrain_state.json") },
                    save: saveCheckpoint, onEvent: onEvent)
            }
            let stepStarted = Date()
            gradients.zero()
            let batch = corpus.trainingBatch(batch: options.batchSize, seqLen: options.seqLen, rng: &state.dataRNG)
            let count = batch.targetCount
            let result = try model.loss(batch, backward: true, gradScale: 1 / Float(max(1, count)), training: true)
            let loss = result.sum / Double(max(1, result.count))
            let norm = clipGradientNorm(gradients, maxNorm: Float(options.maxGradNorm))
            guard loss.isFinite, norm.isFinite else {
                throw LoRAKitError("step \(state.step + 1): the loss or the gradients are not finite (loss \(loss), gradient norm \(norm)); the last checkpoint in \(out) is intact — lower --lr")
            }
            let lr = learningRate(at: state.step)
            optimizer.update(parameters: parameters, gradients: gradients, lr: lr)
            state.step += 1
            state.tokens += batch.rows
            lastLoss = loss
            state.loss = loss
            var valLoss: Double?
            if options.evalEvery > 0 && !validation.isEmpty
                && (state.step % options.evalEvery == 0 || state.step == options.steps) {
                let v = try validationLoss()
                valLoss = v
                state.bestValidationLoss = min(state.bestValidationLoss ?? .infinity, v)
                onEvent(.validation(step: state.step, loss: v))
            }
            state.elapsed = elapsedBefore + Date().timeIntervalSince(started)
            let line = StepMetrics(step: state.step, epoch: Double(state.tokens) / Double(max(1, corpus.trainEnd)),
                                   loss: loss, lr: Double(lr),
                                   tokensPerSecond: Double(batch.rows) / max(1e-9, Date().timeIntervalSince(stepStarted)),
                                   elapsed: state.elapsed, gradNorm: Double(norm), valLoss: valLoss,
                                   totalSteps: options.steps)
            try metrics.append(line)
            onEvent(.step(line))
            if options.saveEvery > 0 && state.step % options.saveEvery == 0 && state.step < options.steps {
                onEvent(.checkpoint(step: state.step, path: try saveCheckpoint()))
            }
        }
        if !validation.isEmpty && state.bestValidationLoss == nil {
            let v = try validationLoss()
            state.bestValidationLoss = v
            onEvent(.validation(step: state.step, loss: v))
        }
        onEvent(.checkpoint(step: state.step, path: try saveCheckpoint()))
        try writeModel(to: out)
        return TrainingSummary(steps: state.step, tokens: state.tokens, seconds: state.elapsed,
                               tokensPerSecond: Double(state.tokens) / max(1e-9, state.elapsed),
                               peakRSSMiB: peakResidentMiB(), finalLoss: lastLoss,
                               bestValidationLoss: state.bestValidationLoss, adapterDirectory: out)
    }

    /// Mean next-token loss over the held-out windows.
    public func validationLoss() throws -> Double {
        var sum = 0.0, count = 0
        for batch in validation {
            let r = try model.loss(batch, backward: false, training: false)
            sum += r.sum
            count += r.count
        }
        return sum / Double(max(1, count))
    }

    /// config.json, model.safetensors and tokenizer.model, each written atomically.
    private func writeModel(to directory: String) throws {
        try model.weights.save(directory: directory)
        let tokenizerData: Data
        do { tokenizerData = try Data(contentsOf: URL(fileURLWithPath: options.tokenizer)) } catch {
            throw LoRAKitError.file(options.tokenizer, "cannot read (\(error.localizedDescription))")
        }
        try AtomicFile.write(tokenizerData, to: directory + "/tokenizer.model")
    }

    /// The name of the file holding a run's options, written when its directory is created.
    public static let runFileName = TrainerCheckpoint.runFileName

    /// Creates the run directory with its `run_options.json` in one atomic step, so that from its first moment
    /// `--resume` can continue it; `--overwrite` swaps an old directory out only once the new one exists. A
    /// continued run keeps its directory (or gets a new one, when a checkpoint is continued elsewhere).
    private func prepareOutput(continuing: Bool) throws {
        let exists = FileManager.default.fileExists(atPath: options.out)
        if continuing && exists { return }
        if exists && !options.overwrite {
            throw LoRAKitError.file(options.out, "already exists; pass --overwrite to replace it, or --resume \(options.out) to continue its run")
        }
        try TrainerCheckpoint.createRunDirectory(at: options.out, overwrite: options.overwrite, runFile: options)
    }

    // MARK: checkpoints

    private struct StateFile: Codable {
        var options: PretrainOptions
        var state: PretrainState
        var optimizerStep: Int
        var format: Int
    }

    private func saveCheckpoint() throws -> String {
        let path = options.out + "/checkpoint-\(state.step)"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json = try encoder.encode(StateFile(options: options, state: state, optimizerStep: optimizer.step, format: 1))
        try AtomicFile.writeDirectory(at: path, overwrite: true) { temporary in
            try SafeTensorsWriter.write([(name: "parameters", tensor: parameters),
                                         (name: "exp_avg", tensor: optimizer.firstMoment),
                                         (name: "exp_avg_sq", tensor: optimizer.secondMoment)],
                                        metadata: ["format": "lorakit-pretrain"], to: temporary + "/state.safetensors")
            try AtomicFile.write(json, to: temporary + "/pretrain_state.json")
        }
        try TrainerCheckpoint.prune(directory: options.out, keep: options.keep)
        return path
    }

    /// The options saved in the newest checkpoint of the run in `directory`, and that checkpoint's path; for a run
    /// stopped before its first checkpoint, the options of its `run_options.json` and no path (it restarts).
    public static func latestCheckpoint(in directory: String) throws -> (options: PretrainOptions, path: String?) {
        if let newest = TrainerCheckpoint.list(directory: directory).last {
            let file = try readState(newest.path)
            return (file.options, newest.path)
        }
        let runFile = directory + "/" + runFileName
        guard let data = FileManager.default.contents(atPath: runFile) else {
            throw LoRAKitError.file(directory, "no checkpoint-N directory and no \(runFileName): not a `lora pretrain` run to resume")
        }
        do { return (try JSONDecoder().decode(PretrainOptions.self, from: data), nil) } catch {
            throw LoRAKitError.file(runFile, "not the options of a `lora pretrain` run (\(error))")
        }
    }

    private static func readState(_ path: String) throws -> StateFile {
        let statePath = path + "/pretrain_state.json"
        guard let data = FileManager.default.contents(atPath: statePath) else {
            throw LoRAKitError.file(statePath, "missing: not a pretraining checkpoint")
        }
        do { return try JSONDecoder().decode(StateFile.self, from: data) } catch {
            throw LoRAKitError.file(statePath, "not a LoRAKit pretraining state (\(error))")
        }
    }

    private func restore(from path: String) throws {
        let file = try Self.readState(path)
        let saved = try SafeTensorsFile(path: path + "/state.safetensors")
        for (name, target) in [("parameters", parameters), ("exp_avg", optimizer.firstMoment),
                               ("exp_avg_sq", optimizer.secondMoment)] {
            let tensor = try saved.tensor(name)
            guard tensor.count == target.count else {
                throw LoRAKitError.file(path + "/state.safetensors", "tensor \(name) has \(tensor.count) values, the model has \(target.count)")
            }
            target.copy(from: tensor)
        }
        optimizer.step = file.optimizerStep
        state = file.state
    }
}
