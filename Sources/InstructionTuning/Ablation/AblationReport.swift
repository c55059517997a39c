import Checkpoints
import Foundation

/// The tables and the plot of an ablation: `results.csv` (one row per run), `results.md` (mean ± std per
/// configuration) and `plot.svg` (validation loss and exact match per configuration, with ±1 std bars).
public struct AblationReport {
    public struct Summary: Equatable {
        public var targets: String
        public var rank: Int
        public var trainableParams: Int
        public var runs: Int
        public var valLoss: (mean: Double, std: Double)
        public var exactMatch: (mean: Double, std: Double)
        public var trainLoss: Double
        public var tokensPerSecond: Double

        public static func == (a: Summary, b: Summary) -> Bool {
            a.targets == b.targets && a.rank == b.rank && a.runs == b.runs && a.valLoss == b.valLoss
                && a.exactMatch == b.exactMatch
        }
    }

    public let results: [AblationResult]
    public let skipped: [(name: String, reason: String)]

    public init(results: [AblationResult], skipped: [(name: String, reason: String)] = []) {
        self.results = results
        self.skipped = skipped
    }

    static func meanStd(_ values: [Double]) -> (mean: Double, std: Double) {
        guard !values.isEmpty else { return (.nan, .nan) }
        let mean = values.reduce(0, +) / Double(values.count)
        guard values.count > 1 else { return (mean, 0) }
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1)
        return (mean, variance.squareRoot())
    }

    /// One summary per (targets, rank), in the order the runs came.
    public var summaries: [Summary] {
        var order: [String] = []
        var groups: [String: [AblationResult]] = [:]
        for r in results {
            let key = "\(r.targets)|\(r.rank)"
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(r)
        }
        return order.compactMap { key in
            guard let rows = groups[key], let first = rows.first else { return nil }
            return Summary(targets: first.targets, rank: first.rank, trainableParams: first.trainableParams,
                           runs: rows.count, valLoss: Self.meanStd(rows.map(\.valLoss)),
                           exactMatch: Self.meanStd(rows.map(\.exactMatch)),
                           trainLoss: Self.meanStd(rows.map(\.trainLoss)).mean,
                           tokensPerSecond: Self.meanStd(rows.map(\.tokensPerSecond)).mean)
        }
    }

    static func writeCSV(_ results: [AblationResult], to path: String) throws {
        let text = ([AblationResult.csvHeader] + results.map(\.csvLine)).joined(separator: "\n") + "\n"
        try AtomicFile.write(Data(text.utf8), to: path)
    }

    public var markdown: String {
        var lines = ["| targets | rank | trainable params | runs | val loss | exact match | train loss | tokens/s |",
                     "|---|---:|---:|---:|---|---|---:|---:|"]
        for s in summaries {
            lines.append(String(format: "| %@ | %d | %d | %d | %.4f ± %.4f | %.3f ± %.3f | %.4f | %.0f |",
                                s.targets, s.rank, s.trainableParams, s.runs, s.valLoss.mean, s.valLoss.std,
                                s.exactMatch.mean, s.exactMatch.std, s.trainLoss, s.tokensPerSecond))
        }
        if let best = summaries.min(by: { $0.valLoss.mean < $1.valLoss.mean }) {
            lines.append("")
            lines.append("Lowest validation loss: **\(best.targets)** at rank \(best.rank).")
        }
        for (name, reason) in skipped { lines.append("Skipped \(name): \(reason).") }
        return lines.joined(separator: "\n") + "\n"
    }

    public func write(to directory: String) throws {
        try Self.writeCSV(results, to: directory + "/results.csv")
        try AtomicFile.write(Data(markdown.utf8), to: directory + "/results.md")
        try AtomicFile.write(Data(svg.utf8), to: directory + "/plot.svg")
    }

    /// Two bar charts side by side: validation loss and exact match per configuration, ±1 std whiskers.
    public var svg: String {
        let rows = summaries
        let labels = rows.map { $0.rank > 0 ? "\($0.targets) r\($0.rank)" : $0.targets }
        let panels: [(title: String, values: [(mean: Double, std: Double)], fixedMax: Double?)] = [
            ("validation loss (lower is better)", rows.map(\.valLoss), nil),
            ("exact match (higher is better)", rows.map(\.exactMatch), 1),
        ]
        let panelWidth = max(320, 48 * rows.count + 80), height = 320, top = 40, bottom = 90, left = 60
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(panelWidth * 2 + 20)" height="\(height)" \
            font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>

            """
        for (p, panel) in panels.enumerated() {
            let x0 = p * (panelWidth + 20)
            let plotHeight = Double(height - top - bottom)
            let finite = panel.values.filter { $0.mean.isFinite }
            let maxValue = panel.fixedMax ?? max(1e-9, (finite.map { $0.mean + ($0.std.isFinite ? $0.std : 0) }.max() ?? 1) * 1.1)
            svg += "<text x=\"\(x0 + panelWidth / 2)\" y=\"20\" text-anchor=\"middle\" font-size=\"13\">\(panel.title)</text>\n"
            svg += "<line x1=\"\(x0 + left)\" y1=\"\(top)\" x2=\"\(x0 + left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
            svg += "<line x1=\"\(x0 + left)\" y1=\"\(height - bottom)\" x2=\"\(x0 + panelWidth - 10)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
            for tick in 0...4 {
                let value = maxValue * Double(tick) / 4
                let y = Double(height - bottom) - plotHeight * Double(tick) / 4
                svg += String(format: "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", x0 + left - 4, y + 4, value)
                svg += String(format: "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                              x0 + left, y, x0 + panelWidth - 10, y)
            }
            let slot = Double(panelWidth - left - 20) / Double(max(1, rows.count))
            for (i, value) in panel.values.enumerated() where value.mean.isFinite {
                let x = Double(x0 + left) + slot * Double(i) + slot * 0.15
                let barHeight = plotHeight * value.mean / maxValue
                let y = Double(height - bottom) - barHeight
                svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"/>\n",
                              x, y, slot * 0.7, barHeight, p == 0 ? "#4878a8" : "#d08830")
                if value.std > 0 && value.std.isFinite {
                    let cx = x + slot * 0.35
                    let y1 = Double(height - bottom) - plotHeight * (value.mean - value.std) / maxValue
                    let y2 = Double(height - bottom) - plotHeight * (value.mean + value.std) / maxValue
                    svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", cx, y1, cx, y2)
                }
                let lx = x + slot * 0.35, ly = Double(height - bottom + 10)
                svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" transform=\"rotate(45 %.1f %.1f)\">%@</text>\n",
                              lx, ly, lx, ly, labels[i])
            }
        }
        return svg + "</svg>\n"
    }
}
