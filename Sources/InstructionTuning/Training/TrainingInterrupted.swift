/// A training run that stopped at a step boundary because it was asked to (Ctrl-C, SIGTERM), having saved what it
/// had: `--resume runDirectory` continues it exactly.
public struct TrainingInterrupted: Error, Sendable {
    /// Optimizer steps done, of the run's total.
    public var step: Int
    public var totalSteps: Int
    /// The checkpoint holding that state; nil when the run stopped before its first step (its directory then holds
    /// only its options, and `--resume` starts it from the beginning).
    public var checkpoint: String?
    /// The run directory, to pass to `--resume`.
    public var runDirectory: String

    public init(step: Int, totalSteps: Int, checkpoint: String?, runDirectory: String) {
        self.step = step
        self.totalSteps = totalSteps
        self.checkpoint = checkpoint
        self.runDirectory = runDirectory
    }
}
