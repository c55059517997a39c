import ArgumentParser
import Foundation
import InstructionTuning
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Ctrl-C (SIGINT) and SIGTERM during a training run: the run finishes the step it is in, saves a checkpoint and
/// exits with 128 + the signal's number, as a process killed by it would; `--resume` continues it bit for bit. A
/// second signal ends the process at once, which loses at most the steps since the last checkpoint (checkpoints
/// are written atomically, so none is ever half there).
enum Interruption {
    /// The signal received, 0 while none.
    private static let received = Atomic<Int32>(0)
    private static let signals = [SIGINT, SIGTERM]

    /// Takes over SIGINT and SIGTERM for the rest of the process.
    static func install() {
        // Initialised here, not on its first use inside the handler (which may only call async-signal-safe code).
        _ = received.load(ordering: .relaxed)
        for number in signals { signal(number, handler) }
    }

    /// Whether a stop was asked for (the runs' `stopRequested`).
    static var isRequested: Bool { received.load(ordering: .relaxed) != 0 }

    /// The async-signal-safe handler: records the signal, hands the next one back to the default action
    /// (termination) and says what happens on the terminal.
    private static let handler: @convention(c) (Int32) -> Void = { number in
        Interruption.received.store(number, ordering: .relaxed)
        signal(number, SIG_DFL)
        let message: StaticString = "\nlora: stopping after this step, saving a checkpoint to resume from (interrupt again to quit at once)\n"
        _ = write(STDERR_FILENO, message.utf8Start, message.utf8CodeUnitCount)
    }

    /// What an interrupted run saved: "interrupted after step 3 of 200: saved DIR/checkpoint-3" + `saved`.
    static func describe(_ stop: TrainingInterrupted, saved: String = "") -> String {
        let report = "interrupted after step \(stop.step) of \(stop.totalSteps): "
        guard let checkpoint = stop.checkpoint else {
            return report + "no step was done; the run directory \(stop.runDirectory) holds its options"
        }
        return report + "saved \(checkpoint)" + saved
    }

    /// Prints `report` and how to continue; the exit status is 128 + the signal's number (130 for Ctrl-C).
    static func exit(_ report: String, resume: String) -> ExitCode {
        printError(report + "\ncontinue with: \(resume)")
        let number = received.load(ordering: .relaxed)
        return ExitCode(128 + (number != 0 ? number : SIGINT))
    }
}
