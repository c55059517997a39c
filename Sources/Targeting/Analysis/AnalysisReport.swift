import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// `lora analyze`: subspace similarity between two adapters and amplification of the base's weights, as
/// markdown tables, heat maps (SVG) and one JSON file.
public struct AnalysisReport {
    public struct Similarity: Codable, Sendable {
        public var module: String
        public var ranks: [Int]
        /// φ(1, 1): do the two adapters' top directions agree?
        public var top: Double
        /// Mean of φ(i, j) over i, j ≤ min(r₁, r₂).
        public var meanOverSmallerRank: Double
        public var phi: [[Double]]
    }

    public var similarities: [Similarity] = []
    public var amplifications: [AdapterAnalysis.Amplification] = []

    /// Analyses `adapter` against `weights`; with `compare`, also the similarity of each module both adapt.
    public init(weights: LlamaWeights, adapter: AdapterSet, compare: AdapterSet?) {
        for lora in adapter.adapters {
            let site = lora.site
            amplifications.append(AdapterAnalysis.amplification(
                module: site.moduleName, adapter: lora, weight: weights.layers[site.layer].projection(site.projection)))
            if let other = compare?.adapter(layer: site.layer, projection: site.projection) {
                let phi = AdapterAnalysis.subspaceSimilarity(lora.a, other.a)
                let k = min(lora.rank, other.rank)
                var sum = 0.0
                for i in 0..<k { for j in 0..<k { sum += phi[i][j] } }
                similarities.append(Similarity(module: site.moduleName, ranks: [lora.rank, other.rank], top: phi[0][0],
                                               meanOverSmallerRank: sum / Double(k * k), phi: phi))
            }
        }
    }

    public var markdown: String {
        var lines: [String] = []
        if !similarities.isEmpty {
            lines += ["## Subspace similarity φ(i, j) between the two adapters' A matrices", "",
                      "| module | ranks | φ(1,1) | mean φ, i,j ≤ min rank |", "|---|---|---:|---:|"]
            for s in similarities {
                lines.append(String(format: "| %@ | %d vs %d | %.3f | %.3f |", s.module, s.ranks[0], s.ranks[1], s.top,
                                    s.meanOverSmallerRank))
            }
            lines.append("")
        }
        lines += ["## Amplification: ‖ΔW‖_F against W projected on r-dimensional subspaces", "",
                  "| module | r | ‖ΔW‖ | ‖UᵀWV‖ (ΔW's) | ‖UᵀWV‖ (W's top-r) | ‖UᵀWV‖ (random) | ‖W‖ | factor |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for a in amplifications {
            lines.append(String(format: "| %@ | %d | %.4f | %.4f | %.4f | %.4f | %.3f | %.2f |", a.module, a.rank,
                                a.deltaNorm, a.projectedOnDelta, a.projectedOnTopW, a.projectedOnRandom, a.weightNorm,
                                a.factor))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// analysis.md, analysis.json and one heat map per compared module, written atomically into `directory`.
    public func write(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try AtomicFile.write(Data(markdown.utf8), to: directory + "/analysis.md")
        struct JSONReport: Codable {
            var similarities: [Similarity]
            var amplifications: [AdapterAnalysis.Amplification]
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(JSONReport(similarities: similarities, amplifications: amplifications)),
                             to: directory + "/analysis.json")
        for s in similarities {
            let svg = AdapterAnalysis.heatMapSVG(s.phi, title: "φ(i, j), \(s.module)", rowLabel: "rank \(s.ranks[0])",
                                                 columnLabel: "rank \(s.ranks[1])")
            try AtomicFile.write(Data(svg.utf8), to: directory + "/similarity-\(s.module).svg")
        }
    }
}
