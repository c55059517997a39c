import Foundation

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
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}
