import Foundation
import MiniGPT
import Targeting
import Tensors

/// Which adapters an ablation trains: target sets at a matched parameter budget (the LoRA paper's Table 5),
/// or one set over several ranks (Table 6).
public struct AblationPlan: Sendable {
    /// One fine-tuning configuration of the study.
    public struct Entry: Equatable, Codable, Sendable {
        public var name: String
        public var targets: [Projection]
        public var rank: Int
        public var trainableParameters: Int
    }

    /// The paper's sets: each projection alone, pairs, all of attention, the FFN, everything.
    public static let defaultSets = ["q", "k", "v", "o", "q,k", "q,v", "q,k,v,o", "ffn", "all"]

    public var entries: [Entry] = []
    /// Sets left out, with the reason (a budget too small for rank 1).
    public var skipped: [(name: String, reason: String)] = []

    /// Adapter parameters per unit of rank for `targets` on every block: Σ (in + out).
    public static func parametersPerRank(_ targets: [Projection], dims: ModelDimensions, layers: Int? = nil) -> Int {
        (layers ?? dims.layers) * targets.reduce(0) { sum, p in
            let f = p.features(dims)
            return sum + f.inFeatures + f.outFeatures
        }
    }

    /// Each set gets the rank whose parameter count is nearest `budget`; a set whose rank 1 already exceeds the
    /// budget by more than 35 % is skipped (and said so).
    public init(sets: [String], budget: Int, dims: ModelDimensions) throws {
        guard budget > 0 else { throw LoRAKitError("--budget must be positive, got \(budget)") }
        for name in sets {
            let targets = try TargetSelection.parseTargets(name)
            let perRank = Self.parametersPerRank(targets, dims: dims)
            if Double(perRank) > Double(budget) * 1.35 {
                skipped.append((name, "rank 1 needs \(perRank) parameters, more than the budget of \(budget)"))
                continue
            }
            let rank = max(1, Int((Double(budget) / Double(perRank)).rounded()))
            entries.append(Entry(name: name, targets: targets, rank: rank, trainableParameters: rank * perRank))
        }
        if entries.isEmpty { throw LoRAKitError("--budget \(budget) is too small for every target set") }
    }

    /// Every set in `sets` at every rank in `ranks`.
    public init(sets: [String], ranks: [Int], dims: ModelDimensions) throws {
        guard !ranks.isEmpty else { throw LoRAKitError("--ranks is empty") }
        if let bad = ranks.first(where: { $0 < 1 }) { throw LoRAKitError("--ranks entries must be positive, got \(bad)") }
        for name in sets {
            let targets = try TargetSelection.parseTargets(name)
            let perRank = Self.parametersPerRank(targets, dims: dims)
            for rank in ranks {
                entries.append(Entry(name: name, targets: targets, rank: rank, trainableParameters: rank * perRank))
            }
        }
    }
}
