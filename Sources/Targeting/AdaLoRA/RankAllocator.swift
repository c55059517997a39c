import Foundation
import Tensors

/// AdaLoRA's rank allocator, PEFT's `RankAllocator` and `AdaLoraModel.update_and_allocate`.
///
/// After every optimizer step (PEFT: after `optimizer.step()`, before `zero_grad()`, so it reads the step's
/// clipped gradients and the updated parameters) each parameter's importance is its sensitivity |p·∂L/∂p|,
/// smoothed (Ī, factor β1) and multiplied by its uncertainty Ū (an average, factor β2, of |I − Ī|). A triplet's
/// score is its e's score plus the mean score of its row of A and of its column of B. The budget of triplets kept
/// over all modules falls from Σ init_r to target_r × modules along a cubic between `tinit` and
/// `total_step − tfinal`; every `deltaT` steps the lowest-scoring triplets beyond the budget get e = 0.
public final class RankAllocator {
    public let schedule: AdaLoRASchedule
    public let totalSteps: Int
    /// Σ init_r over the modules, and target_r × modules.
    public let initialBudget: Int
    public let targetBudget: Int
    /// Ī and Ū, in the layout of the set's parameters.
    public let expAvgIpt: Tensor
    public let expAvgUnc: Tensor
    private unowned let set: AdaLoRASet

    init(set: AdaLoRASet, schedule: AdaLoRASchedule, totalSteps: Int) {
        self.set = set
        self.schedule = schedule
        self.totalSteps = totalSteps
        initialBudget = set.adapters.reduce(0) { $0 + $1.rank }
        targetBudget = schedule.targetRank * set.adapters.count
        expAvgIpt = Tensor(shape: [set.parameters.count])
        expAvgUnc = Tensor(shape: [set.parameters.count])
    }

    /// PEFT's `budget_schedule(step)`: the budget at `step` and whether to mask at it.
    public static func budget(step: Int, initialBudget: Int, targetBudget: Int, tinit: Int, tfinal: Int,
                              totalSteps: Int, deltaT: Int) -> (budget: Int, mask: Bool) {
        if step <= tinit { return (initialBudget, false) }
        if step > totalSteps - tfinal { return (targetBudget, true) }
        let coefficient = 1 - Double(step - tinit) / Double(totalSteps - tfinal - tinit)
        let budget = Int(Double(initialBudget - targetBudget) * pow(coefficient, 3) + Double(targetBudget))
        return (budget, step % deltaT == 0)
    }

    public func budget(step: Int) -> (budget: Int, mask: Bool) {
        Self.budget(step: step, initialBudget: initialBudget, targetBudget: targetBudget, tinit: schedule.tinit,
                    tfinal: schedule.tfinal, totalSteps: totalSteps, deltaT: schedule.deltaT)
    }

    /// PEFT's `update_and_allocate(global_step)`, `globalStep` being the 0-based index of the step just taken.
    public func updateAndAllocate(globalStep: Int) {
        let finalStep = totalSteps - schedule.tfinal
        if globalStep < finalStep {
            updateImportance()
            let (budget, mask) = budget(step: globalStep)
            if mask { set.setRankPattern(maskToBudget(budget)) }
        } else if globalStep == finalStep {
            // The last allocation, to the target budget; the averages are no longer needed.
            set.setRankPattern(maskToBudget(budget(step: globalStep).budget))
            expAvgIpt.zero()
            expAvgUnc.zero()
        } else if let pattern = set.config.rankPattern {
            // Pruned triplets stay pruned while the final phase trains the others.
            for adapter in set.adapters {
                let kept = pattern[AdaLoRAConfig.patternKey(adapter.site.moduleName)] ?? []
                for (i, keep) in kept.enumerated() where !keep && i < adapter.rank { adapter.e.data[i] = 0 }
            }
        }
    }

    /// Ī = β1 Ī + (1−β1) I and Ū = β2 Ū + (1−β2) |I − Ī| with I = |p · ∂L/∂p|, for every parameter.
    func updateImportance() {
        let p = set.parameters.data, g = set.gradients.data, ipt = expAvgIpt.data, unc = expAvgUnc.data
        let b1 = Float(schedule.beta1), c1 = Float(1 - schedule.beta1)
        let b2 = Float(schedule.beta2), c2 = Float(1 - schedule.beta2)
        for i in 0..<set.parameters.count {
            let sensitivity = abs(p[i] * g[i])
            ipt[i] = b1 * ipt[i] + c1 * sensitivity
            unc[i] = b2 * unc[i] + c2 * abs(sensitivity - ipt[i])
        }
    }

    /// The score of every triplet of every module (in adapter order): s(e_i) + mean_j s(A_ij) + mean_o s(B_oi),
    /// s = Ī·Ū.
    public func tripletScores() -> [[Float]] {
        let ipt = expAvgIpt.data, unc = expAvgUnc.data
        return zip(set.adapters, set.offsets).map { adapter, offset in
            let r = adapter.rank, inF = adapter.inFeatures, outF = adapter.outFeatures
            return (0..<r).map { i -> Float in
                var rowA = 0.0, columnB = 0.0
                for j in 0..<inF { let k = offset.a + i * inF + j; rowA += Double(ipt[k] * unc[k]) }
                for o in 0..<outF { let k = offset.b + o * r + i; columnB += Double(ipt[k] * unc[k]) }
                let k = offset.e + i
                return ipt[k] * unc[k] + (Float(rowA / Double(inF)) + Float(columnB / Double(outF)))
            }
        }
    }

    /// Masks (e = 0) every triplet scoring at or below the (initial − budget)-th smallest score, as PEFT's
    /// `mask_to_budget` with `kthvalue`; returns the rank pattern (true = kept).
    func maskToBudget(_ budget: Int) -> [String: [Bool]] {
        let scores = tripletScores()
        let k = initialBudget - budget
        var pattern: [String: [Bool]] = [:]
        guard k >= 1 else {
            for adapter in set.adapters {
                pattern[AdaLoRAConfig.patternKey(adapter.site.moduleName)] = Array(repeating: true, count: adapter.rank)
            }
            return pattern
        }
        let threshold = scores.flatMap { $0 }.sorted()[k - 1]
        for (adapter, moduleScores) in zip(set.adapters, scores) {
            var kept: [Bool] = []
            for (i, score) in moduleScores.enumerated() {
                let keep = !(score <= threshold)
                if !keep { adapter.e.data[i] = 0 }
                kept.append(keep)
            }
            pattern[AdaLoRAConfig.patternKey(adapter.site.moduleName)] = kept
        }
        return pattern
    }
}
