import Foundation

/// What a training run reports as it goes; the CLI prints these, tests assert on them.
public enum TrainingEvent {
    /// The data after encoding: examples kept for training and validation, and how many were cut or dropped.
    case dataset(train: Int, validation: Int, truncated: Int, skipped: Int)
    /// The run is about to start (or resume) at `step` of `totalSteps`, training `trainable` parameters.
    case start(step: Int, totalSteps: Int, trainable: Int)
    case step(StepMetrics)
    case validation(step: Int, loss: Double)
    case checkpoint(step: Int, path: String)
    case warning(String)
}

/// One line of `metrics.jsonl`.
public struct StepMetrics: Codable, Equatable, Sendable {
    public var step: Int
    public var epoch: Double
    public var loss: Double
    public var lr: Double
    public var tokensPerSecond: Double
    public var elapsed: Double
    public var gradNorm: Double
    public var valLoss: Double?
    public var totalSteps: Int

    enum CodingKeys: String, CodingKey {
        case step, epoch, loss, lr, elapsed
        case tokensPerSecond = "tokens_per_s"
        case gradNorm = "grad_norm"
        case valLoss = "val_loss"
        case totalSteps = "total_steps"
    }
}

/// The end of a run.
public struct TrainingSummary: Sendable {
    public var steps: Int
    public var tokens: Int
    public var seconds: Double
    public var tokensPerSecond: Double
    public var peakRSSMiB: Double
    public var finalLoss: Double
    public var bestValidationLoss: Double?
    public var adapterDirectory: String
}

/// The largest resident set this process has had, in MiB.
public func peakResidentMiB() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_maxrss) / 1024   // Linux reports KiB
}
