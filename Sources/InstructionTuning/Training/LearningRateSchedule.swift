import Foundation
import Tensors

/// The learning rate at each optimizer step: linear warmup from 0, then constant, linear decay to 0, or cosine to 0.
///
/// Matches transformers' `get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup` and
/// `get_cosine_schedule_with_warmup`; with no warmup, `constant` keeps the rate fixed from the first step.
public struct LearningRateSchedule: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, CaseIterable, Sendable { case constant, linear, cosine }

    public var kind: Kind
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(kind: Kind, peak: Float, warmupSteps: Int, totalSteps: Int) {
        self.kind = kind
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    /// The rate for optimizer step `step` (0-based: the first update uses step 0).
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step) / Float(max(1, warmupSteps)) }
        let decaySteps = max(1, totalSteps - warmupSteps)
        let progress = min(1, Double(step - warmupSteps) / Double(decaySteps))
        switch kind {
        case .constant: return peak
        case .linear: return peak * Float(max(0, 1 - progress))
        case .cosine: return peak * Float(max(0, 0.5 * (1 + cos(Double.pi * progress))))
        }
    }
}
