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

extension TrainingInterrupted {
    /// Stops a run between two steps: saves its state with `save` (reporting the checkpoint through `onEvent`),
    /// unless no step was done or `isSaved` finds a complete checkpoint of this step (saved or resumed just here).
    static func stopping(at step: Int, of totalSteps: Int, runDirectory: String, isSaved: (String) -> Bool,
                         save: () throws -> String, onEvent: (TrainingEvent) -> Void) throws -> TrainingInterrupted {
        var checkpoint: String?
        if step > 0 {
            let existing = runDirectory + "/checkpoint-\(step)"
            if isSaved(existing) {
                checkpoint = existing
            } else {
                let path = try save()
                onEvent(.checkpoint(step: step, path: path))
                checkpoint = path
            }
        }
        return TrainingInterrupted(step: step, totalSteps: totalSteps, checkpoint: checkpoint, runDirectory: runDirectory)
    }
}
