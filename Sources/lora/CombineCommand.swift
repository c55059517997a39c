import ArgumentParser
import Foundation
import Targeting

extension CombineMethod: ExpressibleByArgument {}

struct Combine: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Combine several PEFT adapters into one, as PEFT's add_weighted_adapter does.",
        discussion: """
            cat stacks the adapters (exact; rank = sum of ranks); linear adds their factors, each scaled by \
            sqrt(|weight·scale|) (same rank; an approximation when combining several); svd keeps the best rank-R \
            approximation of the weighted sum of their updates (--svd-rank, default the largest input rank). The \
            result has lora_alpha = r: the weights and scales are in its tensors.
            """)

    @Option(help: ArgumentHelp("An adapter directory and its weight: DIR:0.7 (weight 1 when omitted). Repeat.",
                               valueName: "dir[:weight]"))
    var adapter: [String] = []

    @Option(help: "cat, linear or svd.")
    var method: CombineMethod

    @Option(help: "Base model, a directory or GGUF file (default: the first adapter's base_model_name_or_path).")
    var base: String?

    @Option(help: "Rank of the result for --method svd (default: the largest input rank).")
    var svdRank: Int?

    @Option(help: "Output adapter directory.")
    var out: String

    @Flag(help: "Replace --out if it exists.")
    var overwrite = false

    func validate() throws {
        if adapter.isEmpty { throw ValidationError("give at least one --adapter DIR:WEIGHT") }
        if svdRank != nil && method != .svd { throw ValidationError("--svd-rank applies to --method svd only") }
        if let svdRank, svdRank < 1 { throw ValidationError("--svd-rank must be at least 1, got \(svdRank)") }
    }

    func run() throws {
        let combined = try AdapterCombination.combine(adapterArguments: adapter, base: base, method: method,
                                                      svdRank: svdRank, out: out, overwrite: overwrite)
        printError("combined \(adapter.count) adapter(s) with \(method.rawValue): rank \(combined.config.r), \(combined.adapters.count) module(s), written to \(out)")
    }
}
