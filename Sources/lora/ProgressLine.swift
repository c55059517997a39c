import Foundation
import InstructionTuning

/// A live status line on a terminal (rewritten in place); plain lines when stderr is a file or pipe.
final class ProgressLine {
    private let interactive = isatty(STDERR_FILENO) != 0
    private var lastPlain = Date.distantPast

    func update(_ text: String, final: Bool) {
        if interactive {
            printErrorRaw("\r\u{1B}[K" + text + (final ? "\n" : ""))
        } else if final || Date().timeIntervalSince(lastPlain) >= 5 {
            lastPlain = Date()
            printError(text)
        }
    }

    /// A line of its own, above the status line.
    func note(_ text: String) {
        printErrorRaw(interactive ? "\r\u{1B}[K" + text + "\n" : text + "\n")
    }
}

func printErrorRaw(_ text: String) {
    FileHandle.standardError.write(text.data(using: .utf8) ?? Data())
}

/// "1h02m", "3m05s", "12s".
func formatDuration(_ seconds: Double) -> String {
    // Beyond a year the figure means nothing (and would overflow Int for absurd step counts).
    guard seconds.isFinite, seconds >= 0, seconds < 3.2e7 else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}

/// Prints a training run's events (`finetune`, `pretrain`): set-up lines, the live step line, notes.
struct TrainingPrinter {
    let progress = ProgressLine()
    /// "data: …" or "corpus: …", from the dataset event's four counts.
    let describeData: (_ train: Int, _ validation: Int, _ truncated: Int, _ skipped: Int) -> String
    /// "adapter parameters" or "parameters".
    let parameterNoun: String

    func handle(_ event: TrainingEvent) {
        switch event {
        case let .dataset(train, validation, truncated, skipped):
            printError(describeData(train, validation, truncated, skipped))
        case let .start(step, total, trainable):
            printError("training \(trainable) \(parameterNoun) for \(total) steps" + (step > 0 ? ", from step \(step)" : ""))
        case let .step(m):
            let eta = m.elapsed / Double(max(1, m.step)) * Double(m.totalSteps - m.step)
            progress.update(String(format: "step %d/%d  loss %.4f  lr %.2e  %.0f tok/s  ETA %@",
                                   m.step, m.totalSteps, m.loss, m.lr, m.tokensPerSecond, formatDuration(eta)),
                            final: m.step == m.totalSteps)
        case let .validation(step, loss):
            progress.note(String(format: "step %d: validation loss %.4f", step, loss))
        case let .checkpoint(step, path):
            progress.note("step \(step): checkpoint \(path)")
        case let .warning(text):
            progress.note("warning: \(text)")
        }
    }

    /// The closing lines: where the result is, tokens, time, throughput, memory, losses.
    static func summary(_ s: TrainingSummary, what: String, validationLabel: String) -> String {
        var lines = [
            "\(what): \(s.adapterDirectory)",
            String(format: "steps %d, tokens %d, time %@, %.0f tokens/s, peak RSS %.0f MiB, final loss %.4f",
                   s.steps, s.tokens, formatDuration(s.seconds), s.tokensPerSecond, s.peakRSSMiB, s.finalLoss),
        ]
        if let best = s.bestValidationLoss { lines.append(String(format: "\(validationLabel) %.4f", best)) }
        return lines.joined(separator: "\n")
    }
}
