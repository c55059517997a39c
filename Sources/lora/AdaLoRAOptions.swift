import ArgumentParser
import Targeting

/// `finetune --adalora` and its schedule (PEFT's AdaLoraConfig; `--rank` is the initial rank, `init_r`).
struct AdaLoRAOptions: ParsableArguments {
    @Flag(help: "Train AdaLoRA (PEFT's ADALORA): s·B·diag(E)·A with --rank as the initial rank, pruned to --target-rank on average by importance.")
    var adalora = false
    @Option(help: "AdaLoRA: average rank at the end of the budget schedule (target_r); below --rank.") var targetRank: Int?
    @Option(help: "AdaLoRA: steps at the full budget before pruning starts (tinit).") var tinit: Int = 0
    @Option(help: "AdaLoRA: final steps at the target budget with the rank pattern fixed (tfinal).") var tfinal: Int = 0
    @Option(help: "AdaLoRA: steps between two rank allocations (deltaT).") var deltaT: Int = 1
    @Option(help: "AdaLoRA: EMA factor of the importance (sensitivity) smoothing, in (0, 1).") var beta1: Double = 0.85
    @Option(help: "AdaLoRA: EMA factor of the importance uncertainty, in (0, 1).") var beta2: Double = 0.85
    @Option(help: "AdaLoRA: weight of the orthogonality regulariser ‖AAᵀ−I‖ + ‖BᵀB−I‖ added to the loss.")
    var orthRegWeight: Double = 0.5

    func validate() throws {
        if !adalora && targetRank != nil { throw ValidationError("--target-rank applies to --adalora only") }
        if adalora && targetRank == nil { throw ValidationError("--adalora needs --target-rank (the average rank to prune to)") }
    }

    /// The schedule, or nil without --adalora.
    var schedule: AdaLoRASchedule? {
        guard adalora, let targetRank else { return nil }
        return AdaLoRASchedule(targetRank: targetRank, tinit: tinit, tfinal: tfinal, deltaT: deltaT, beta1: beta1,
                               beta2: beta2, orthRegWeight: orthRegWeight)
    }
}
