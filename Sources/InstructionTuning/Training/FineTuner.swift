import Checkpoints
import Foundation
import MiniGPT
import Targeting
import Tensors
import Tokenizer

/// LoRA fine-tuning on instruction data: the loop of `lora finetune`.
///
/// Each optimizer step takes `gradAccum` micro-batches, scales every micro-batch's loss by 1 / (unmasked targets
/// of the whole step) so the gradients add up to the mean, clips, and updates the adapters with AdamW. The base
/// stays frozen; the backward stops at the lowest adapted block.
public final class FineTuner {
    public let options: FineTuneOptions
    public let model: LlamaModel
    public let tokenizer: SentencePieceTokenizer
    /// The adapters being trained: a LoRA `AdapterSet`, or an `AdaLoRASet` with `--adalora`.
    public let adapters: any TrainableAdapters
    let optimizer: AdamW
    let schedule: LearningRateSchedule
    let batcher: Batcher
    let validation: [EncodedExample]
    public let totalSteps: Int
    /// The chat template the run's conversation records are written in; nil when the data has none.
    public let conversationTemplate: ChatTemplate?
    var state: TrainerState
    /// Set when this tuner continues a run (from a checkpoint or from the run's start): the run directory exists.
    let resumed: TrainerCheckpoint?

    /// Loads the base and the data, builds (or loads) the adapter. Nothing is written until `run`.
    public init(options given: FineTuneOptions, resume: TrainerCheckpoint? = nil) throws {
        try given.validate()
        let options = try given.resolvingDataDirectory()
        self.options = options
        resumed = resume
        // PiSSA on a quantized base (QPiSSA) takes the SVD of the F32 weights and quantizes the residual it trains
        // on, so the base loads in F32 first and is quantized when the training base is built.
        let quantization = try options.quantization
        let quantizeAfterPiSSA = options.isPiSSA && quantization != .none
        let weights = try BaseModel.weights(options.base, quantization: quantizeAfterPiSSA ? .none : quantization)
        tokenizer = try BaseModel.tokenizer(options.base)
        if tokenizer.vocabSize > weights.dims.vocab {
            throw LoRAKitError.file(options.base, "tokenizer.model has \(tokenizer.vocabSize) pieces but the model's vocab_size is \(weights.dims.vocab)")
        }

        // Data: records → prompt/response ids → batches.
        let template = try PromptTemplate.named(options.template)
        var encoder = ExampleEncoder(tokenizer: tokenizer, template: template,
                                     bosId: Int32(weights.config.bosTokenId), eosId: Int32(weights.config.eosTokenId),
                                     maskPrompt: options.maskPrompt, maxSeqLen: options.maxSeqLen,
                                     overflow: options.skipLong ? .skip : .truncate)
        let records = try InstructionDataset.load(path: options.data)
        var trainRecords = records, valRecords: [InstructionRecord] = []
        if let valPath = options.valData { valRecords = try InstructionDataset.load(path: valPath) }
        // The base's chat template (auto) is looked up only when there are conversations; a named one is checked.
        let hasConversations = records.contains { $0.messages != nil } || valRecords.contains { $0.messages != nil }
        if options.chatTemplate != nil || hasConversations { encoder.chatTemplate = try options.resolvedChatTemplate() }
        conversationTemplate = hasConversations ? encoder.chatTemplate : nil
        try encoder.chatTemplate.check(records, path: options.data)
        if let valPath = options.valData {
            try encoder.chatTemplate.check(valRecords, path: valPath)
        } else if options.valFraction > 0 {
            (trainRecords, valRecords) = try Batcher.split(records, valFraction: options.valFraction, seed: options.seed)
        }
        // a tokenizer written from a GGUF vocabulary may refuse a text (TokenizerError): named with its file
        func encode(_ records: [InstructionRecord], from path: String) throws -> (examples: [EncodedExample], truncated: Int, skipped: Int) {
            do { return try encoder.encode(records) } catch let error as TokenizerError {
                throw LoRAKitError.file(path, "a record cannot be tokenized: \(error)")
            }
        }
        let train = try encode(trainRecords, from: options.data)
        validation = valRecords.isEmpty ? [] : try encode(valRecords, from: options.valData ?? options.data).examples
        // A batch larger than the data is the whole data (capped so that no index arithmetic can overflow).
        batcher = try Batcher(examples: train.examples, batchSize: min(options.batchSize, max(1, train.examples.count)),
                              seed: options.seed, maskPrompt: options.maskPrompt)
        datasetCounts = (train.examples.count, validation.count, train.truncated, train.skipped)

        // Rounded up, written so that a huge --grad-accum or --epochs cannot overflow.
        let stepsPerEpoch = (batcher.batchesPerEpoch - 1) / options.gradAccum + 1
        let (epochSteps, overflow) = options.epochs.multipliedReportingOverflow(by: stepsPerEpoch)
        if options.steps == nil && overflow {
            throw LoRAKitError("--epochs \(options.epochs) × \(stepsPerEpoch) steps per epoch is too many steps to count")
        }
        totalSteps = options.steps ?? epochSteps

        // The adapter: resumed, started from an existing PEFT adapter, or new (also when a run that saved no
        // checkpoint yet is resumed: it starts over exactly as it started).
        if let adaLoRA = try Self.adaLoRAAdapters(options, dims: weights.dims, totalSteps: totalSteps, resume: resume) {
            adapters = adaLoRA
            model = LlamaModel(weights: weights)
        } else {
            let lora: AdapterSet
            if let resume, resume.state != nil, options.isPiSSA {
                // The checkpoint holds the converted adapter; A₀ and B₀ in it give back the residual base.
                lora = try AdapterSet.resumePiSSA(directory: resume.directory, config: try Self.newAdapterConfig(options, weights),
                                                  dims: weights.dims)
            } else if let resume, resume.state != nil {
                lora = try AdapterSet.load(directory: resume.directory, dims: weights.dims)
            } else if let initial = options.initAdapter {
                lora = try AdapterSet.load(directory: initial, dims: weights.dims)
                if options.dora == true && !lora.isDoRA {
                    throw LoRAKitError.file(initial, "is a plain LoRA adapter (use_dora is false), but --dora was given: the adapter's own config decides; drop --dora or start from a DoRA adapter")
                }
            } else {
                // Every projection has the hidden size on one side, so a larger rank exceeds min(in, out) of each: it
                // adds no capacity, only memory (and an absurd one would exhaust it).
                guard options.rank <= weights.dims.dim else {
                    throw LoRAKitError("--rank \(options.rank) is larger than the model's hidden size \(weights.dims.dim); a LoRA rank above min(in, out) of a projection adds nothing")
                }
                let config = try Self.newAdapterConfig(options, weights)
                lora = try AdapterSet(config: config, dims: weights.dims, initialization: try config.initialization(),
                                      seed: options.seed, base: weights)
            }
            // PiSSA trains on the residual of the base; every other adapter on the base itself.
            model = LlamaModel(weights: try lora.trainingBase(weights, quantization: quantizeAfterPiSSA ? quantization : .none))
            adapters = lora
        }
        // A loaded adapter trains with this run's dropout.
        adapters.setDropout(Float(options.dropout))
        try adapters.attach(to: model)

        optimizer = AdamW(parameterCount: adapters.parameters.count, weightDecay: Float(options.weightDecay))
        if let ratio = options.loraplusLrRatio, let set = adapters as? AdapterSet {
            // LoRA+: B (and DoRA's magnitudes) learn at ratio × lr
            let scale = Tensor(shape: [set.parameters.count])
            scale.data.update(repeating: 1, count: scale.count)
            for range in set.outputSideRanges { (scale.data + range.lowerBound).update(repeating: Float(ratio), count: range.count) }
            optimizer.learningRateScale = scale
        }
        schedule = LearningRateSchedule(kind: LearningRateSchedule.Kind(rawValue: options.lrSchedule) ?? .cosine,
                                        peak: Float(options.lr), warmupSteps: options.warmupSteps,
                                        totalSteps: totalSteps)
        state = TrainerState(step: 0, microStep: 0, tokens: 0, elapsed: 0, bestValidationLoss: nil,
                             dropoutRNG: adapters.dropoutStates)
        dataFingerprint = TrainerCheckpoint.fingerprint([options.data] + (options.valData.map { [$0] } ?? []))
        if let resume {
            try resume.restore(into: optimizer, state: &state)
            try adapters.restoreDropoutStates(state.dropoutRNG)
        }
    }

    /// The adapter config of a new run: targets, layers, rank, alpha, dropout, rsLoRA, DoRA and initialisation.
    static func newAdapterConfig(_ options: FineTuneOptions, _ weights: LlamaWeights) throws -> LoRAConfig {
        let initialization: LoRAConfig.InitLoRAWeights
        switch options.initialization {
        case "gaussian": initialization = .method("gaussian")
        case "kaiming": initialization = .flag(true)
        default: initialization = AdapterInitialization.pissa(method: options.initialization)?.configValue ?? .flag(true)
        }
        var config = LoRAConfig(targets: try TargetSelection.parseTargets(options.targets),
                                layers: options.layers == nil ? nil
                                    : try TargetSelection.parseLayers(options.layers, layerCount: weights.dims.layers),
                                r: options.rank, loraAlpha: options.alpha, loraDropout: options.dropout,
                                useRslora: options.rslora, initLoraWeights: initialization, useDora: options.dora ?? false)
        config.baseModelNameOrPath = options.base
        return config
    }

    let datasetCounts: (train: Int, validation: Int, truncated: Int, skipped: Int)
    let dataFingerprint: String

    /// Trains to the end, writing checkpoints, `metrics.jsonl` and the final adapter into `options.out`.
    ///
    /// `stopRequested` is asked before every step; once it says yes the run saves a checkpoint of where it is
    /// (unless it has one already) and throws `TrainingInterrupted`, so that `--resume` continues it bit for bit.
    public func run(_ onEvent: (TrainingEvent) -> Void = { _ in },
                    stopRequested: () -> Bool = { false }) throws -> TrainingSummary {
        onEvent(.dataset(train: datasetCounts.train, validation: datasetCounts.validation,
                         truncated: datasetCounts.truncated, skipped: datasetCounts.skipped))
        let out = options.out
        if let resumed {
            TrainerCheckpoint.removeDebris(directory: out)
            for warning in resumeWarnings(resumed) { onEvent(.warning(warning)) }
        } else {
            try prepareOutputDirectory()
        }
        let metrics = try MetricsLog(path: out + "/metrics.jsonl", truncateAfter: state.step)
        onEvent(.start(step: state.step, totalSteps: totalSteps, trainable: adapters.parameters.count))
        state.dataFingerprint = dataFingerprint
        let firstStep = state.step

        let started = Date()
        let elapsedBefore = state.elapsed
        var lastLoss = state.loss ?? .nan
        while state.step < totalSteps {
            if stopRequested() {
                throw try TrainingInterrupted.stopping(at: state.step, of: totalSteps, runDirectory: out,
                                                       isSaved: TrainerCheckpoint.isComplete, save: saveCheckpoint,
                                                       onEvent: onEvent)
            }
            let stepStarted = Date()
            adapters.zeroGradients()
            // Micro-batches are built one at a time, twice (first to count the step's targets), so memory does
            // not grow with --grad-accum.
            let targets = (0..<options.gradAccum).reduce(0) { $0 + microBatch(state.microStep + $1).targetCount }
            let scale = 1 / Float(max(1, targets))
            var lossSum = 0.0, tokens = 0
            for i in 0..<options.gradAccum {
                let batch = microBatch(state.microStep + i)
                lossSum += try model.loss(batch, backward: true, gradScale: scale, training: true).sum
                tokens += batch.lengths.reduce(0) { $0 + Int($1) }
            }
            // A variant's regulariser (AdaLoRA's orthogonality term) joins the loss and the gradients once per step.
            let loss = lossSum / Double(max(1, targets)) + adapters.addRegularization()
            let gradNorm = clipGradientNorm(adapters.gradients, maxNorm: Float(options.maxGradNorm))
            guard loss.isFinite, gradNorm.isFinite else {
                // Nothing of this step is applied or written: the last checkpoint stays the last good state.
                let last = TrainerCheckpoint.list(directory: out).last(where: { TrainerCheckpoint.isComplete($0.path) })
                let kept = last.map { "the last good checkpoint, \($0.path), is intact" } ?? "no checkpoint was saved yet"
                throw LoRAKitError("step \(state.step + 1): the loss or the gradients are not finite (loss \(loss), gradient norm \(gradNorm)); training stopped and \(kept) — lower --lr or check the data")
            }
            let lr = schedule.rate(at: state.step)
            optimizer.update(parameters: adapters.parameters, gradients: adapters.gradients, lr: lr)
            adapters.afterOptimizerStep(state.step)
            state.step += 1
            state.microStep += options.gradAccum
            state.tokens += tokens
            lastLoss = loss
            state.loss = loss

            var valLoss: Double?
            if options.evalEvery > 0 && !validation.isEmpty && (state.step % options.evalEvery == 0 || state.step == totalSteps) {
                let v = try validationLoss()
                valLoss = v
                state.bestValidationLoss = min(state.bestValidationLoss ?? .infinity, v)
                onEvent(.validation(step: state.step, loss: v))
            }
            let elapsed = elapsedBefore + Date().timeIntervalSince(started)
            state.elapsed = elapsed
            let stepSeconds = Date().timeIntervalSince(stepStarted)
            let line = StepMetrics(step: state.step,
                                   epoch: Double(state.microStep) / Double(max(1, batcher.batchesPerEpoch)),
                                   loss: loss, lr: Double(lr), tokensPerSecond: Double(tokens) / max(stepSeconds, 1e-9),
                                   elapsed: elapsed, gradNorm: Double(gradNorm), valLoss: valLoss, totalSteps: totalSteps)
            try metrics.append(line)
            onEvent(.step(line))
            if options.saveEvery > 0 && state.step % options.saveEvery == 0 && state.step < totalSteps {
                let path = try saveCheckpoint()
                onEvent(.checkpoint(step: state.step, path: path))
            }
        }
        // The final adapter, and a checkpoint of the finished state (so --resume of a finished run does nothing).
        if !validation.isEmpty && state.bestValidationLoss == nil {
            let v = try validationLoss()
            state.bestValidationLoss = v
            onEvent(.validation(step: state.step, loss: v))
        }
        if let warning = adapters.inertWarning { onEvent(.warning(warning)) }
        // Resuming a run that was killed after its final checkpoint: that checkpoint is this state already.
        let finalCheckpoint = out + "/checkpoint-\(state.step)"
        if state.step > firstStep || !TrainerCheckpoint.isComplete(finalCheckpoint) {
            let path = try saveCheckpoint()
            onEvent(.checkpoint(step: state.step, path: path))
        }
        try adapters.save(to: out, baseModelPath: options.base)
        let seconds = state.elapsed
        return TrainingSummary(steps: state.step, tokens: state.tokens, seconds: seconds,
                               tokensPerSecond: Double(state.tokens) / max(seconds, 1e-9),
                               peakRSSMiB: peakResidentMiB(), finalLoss: lastLoss,
                               bestValidationLoss: state.bestValidationLoss, adapterDirectory: out)
    }

    /// Micro-batch `number` of the run (counting across epochs): the seed's order, or file order unshuffled.
    private func microBatch(_ number: Int) -> TokenBatch {
        let epoch = number / batcher.batchesPerEpoch, index = number % batcher.batchesPerEpoch
        if options.shuffle { return batcher.batch(epoch: epoch, index: index) }
        // Unshuffled: file order, the same every epoch.
        let examples = batcher.examples
        let range = (index * batcher.batchSize)..<min(examples.count, (index + 1) * batcher.batchSize)
        return Batcher.makeTokenBatch(Array(examples[range]), maskPrompt: options.maskPrompt)
    }

    /// Mean loss over the validation examples (no dropout, no gradients).
    public func validationLoss() throws -> Double {
        var sum = 0.0, count = 0
        var start = 0
        while start < validation.count {
            let end = start + min(validation.count - start, options.batchSize)
            let batch = Batcher.makeTokenBatch(Array(validation[start..<end]), maskPrompt: options.maskPrompt)
            let r = try model.loss(batch, backward: false, training: false)
            sum += r.sum
            count += r.count
            start = end
        }
        return sum / Double(max(1, count))
    }

    /// Creates the run directory with its `run_options.json` in one atomic step, so that from its first moment
    /// `--resume` can continue it; `--overwrite` swaps an old one out only once the new one exists.
    private func prepareOutputDirectory() throws {
        if FileManager.default.fileExists(atPath: options.out) && !options.overwrite {
            throw LoRAKitError.file(options.out, "already exists; pass --overwrite to replace it, or --resume \(options.out) to continue its run")
        }
        try TrainerCheckpoint.createRunDirectory(options: options, threads: Threads.count)
    }

    /// What would make a resumed run differ from the run that was never interrupted.
    private func resumeWarnings(_ resumed: TrainerCheckpoint) -> [String] {
        var warnings: [String] = []
        if let threads = resumed.runThreads, threads != Threads.count {
            warnings.append("the run used \(threads) threads and resumes with \(Threads.count): it will not be bit-identical to an uninterrupted run (pass --threads \(threads))")
        }
        if let saved = resumed.state?.dataFingerprint, saved != dataFingerprint {
            warnings.append("the data files changed since the run started (\(options.data)): the resumed run continues on the new data, in a different order")
        }
        return warnings
    }

    /// Writes `checkpoint-STEP` atomically and removes all but the last `keep`.
    private func saveCheckpoint() throws -> String {
        let path = try TrainerCheckpoint.save(directory: options.out, step: state.step, options: options,
                                              adapters: adapters, optimizer: optimizer, state: state)
        try TrainerCheckpoint.prune(directory: options.out, keep: options.keep)
        return path
    }
}
