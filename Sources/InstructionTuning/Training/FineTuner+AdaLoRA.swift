import MiniGPT
import Targeting
import Tensors

extension FineTuner {
    /// The AdaLoRA adapter of a run, or nil when the run trains LoRA.
    ///
    /// `--adalora` builds a new one (or continues the one `--init-adapter` names, which must hold all its
    /// triplets); a resumed run rebuilds it from the checkpoint's unpruned state. The allocator's schedule is the
    /// run's (`--target-rank`, `--tinit` …) with PEFT's `total_step` = the run's steps.
    static func adaLoRAAdapters(_ options: FineTuneOptions, dims: ModelDimensions, totalSteps: Int,
                                resume: TrainerCheckpoint?) throws -> AdaLoRASet? {
        let initIsAdaLoRA = options.initAdapter.map { AdapterDirectory.peftType($0) == AdaLoRAConfig.peftTypeName } ?? false
        guard let schedule = options.adalora else {
            if initIsAdaLoRA, let initial = options.initAdapter {
                throw LoRAKitError.file(initial, "is an AdaLoRA adapter: continue it with --adalora (and its --target-rank and schedule)")
            }
            return nil
        }
        if let resume, resume.state != nil {
            return try AdaLoRASet.resume(directory: resume.directory, dims: dims, seed: options.seed, schedule: schedule,
                                         totalSteps: totalSteps)
        }
        let set: AdaLoRASet
        if let initial = options.initAdapter {
            guard initIsAdaLoRA else {
                throw LoRAKitError.file(initial, "is not an AdaLoRA adapter (peft_type is not ADALORA), but --adalora was given: start from an AdaLoRA adapter or drop --adalora")
            }
            // Its own targets, init_r and alpha are used, as for a LoRA --init-adapter.
            set = try AdaLoRASet.load(directory: initial, dims: dims, seed: options.seed)
        } else {
            guard options.rank <= dims.dim else {
                throw LoRAKitError("--rank \(options.rank) is larger than the model's hidden size \(dims.dim); a rank above min(in, out) of a projection adds nothing")
            }
            var config = AdaLoRAConfig(targets: try TargetSelection.parseTargets(options.targets),
                                       layers: options.layers == nil ? nil
                                           : try TargetSelection.parseLayers(options.layers, layerCount: dims.layers),
                                       initR: options.rank, targetR: schedule.targetRank, loraAlpha: options.alpha,
                                       loraDropout: options.dropout, schedule: schedule, totalStep: totalSteps)
            config.baseModelNameOrPath = options.base
            set = try AdaLoRASet(config: config, dims: dims, seed: options.seed)
        }
        try set.startTraining(schedule: schedule, totalSteps: totalSteps)
        return set
    }
}
