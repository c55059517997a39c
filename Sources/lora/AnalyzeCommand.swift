import ArgumentParser
import Foundation
import MiniGPT
import Targeting
import Tensors

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The LoRA paper's §7 analyses of trained adapters.",
        discussion: """
            For every adapted module: how strongly ΔW = s·B·A amplifies directions of W (‖ΔW‖_F against W projected \
            on ΔW's, W's own and random r-dimensional subspaces). With --compare, also the subspace similarity \
            φ(i, j) between the two adapters' A matrices (e.g. rank 8 against rank 64, or two seeds), with a heat \
            map per module. Writes analysis.md, analysis.json and similarity-*.svg into --out.
            """)

    @Option(help: "Base model the adapters were trained on (a directory or GGUF file).") var base: String
    @Option(help: "A PEFT adapter directory.") var adapter: String
    @Option(help: "A second adapter on the same base, for subspace similarity.") var compare: String?
    @Option(help: "Output directory.") var out: String
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        let weights = try BaseModel.weights(base)
        let dims = ModelDimensions(weights.config)
        let first = try AdapterSet.loadFactors(directory: adapter, dims: dims)
        let second = try compare.map { try AdapterSet.loadFactors(directory: $0, dims: dims) }
        let report = AnalysisReport(weights: weights, adapter: first, compare: second)
        try report.write(to: out)
        print(report.markdown, terminator: "")
        print("written: \(out)/analysis.md, \(out)/analysis.json" + (second == nil ? "" : ", \(out)/similarity-*.svg"))
    }
}
