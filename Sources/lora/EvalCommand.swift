import ArgumentParser
import Foundation
import InstructionTuning
import MiniGPT
import Tensors
import Tokenizer

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a base model (with adapters) on instruction data; prints JSON.",
        discussion: """
            Prints {"loss", "perplexity", "exact_match", "count", "tokens", "examples"}: loss and perplexity on the \
            response tokens, and the share of greedy answers equal to the expected output (white space trimmed).
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: "Data: JSON array or JSONL of instruction/input/output, prompt/completion, text or messages records, or a directory in mlx-lm's layout (its test.jsonl).") var data: String
    @Option(help: "Prompt template: alpaca, or a JSON file with prompt_input and prompt_no_input.")
    var template: String = "alpaca"
    @Option(help: "Chat template for {\"messages\"} records: auto (the base's own; llama2 if it has none), llama2, mistral, zephyr, or a JSON file (as in finetune).")
    var chatTemplate: String = "auto"
    @Option(help: "Longest example in tokens for the loss (longer ones are truncated).") var maxSeqLen: Int = 256
    @Option(help: "Evaluate only the first N records.") var limit: Int?
    @Flag(help: "Skip greedy generation (loss and perplexity only).") var noGenerate = false
    @Option(help: "How many evaluated examples to include in the JSON (all by default).") var showExamples: Int?
    @Option(help: "Also report per value of this record field (e.g. family), and print a table on stderr.")
    var groupBy: String?
    @Option(help: ArgumentHelp("A JSON report of an earlier `lora eval` on the same data (say, of the base alone): print both side by side on stderr.",
                               valueName: "file.json"))
    var baseline: String?
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1, got \(limit)") }
        if maxSeqLen < 2 { throw ValidationError("--max-seq-len must be at least 2, got \(maxSeqLen)") }
    }

    func run() throws {
        runtime.apply()
        let baselineReport = try baseline.map { try EvaluationComparison.loadReport(path: $0) }
        let loaded = try model.load()
        let dataFile = try DataDirectory.resolve(data, split: .test)
        var records = try InstructionDataset.load(path: dataFile)
        if let limit { records = Array(records.prefix(limit)) }
        var evaluator = Evaluator(model: loaded.model, tokenizer: loaded.tokenizer, template: try PromptTemplate.named(template))
        evaluator.maxSeqLen = maxSeqLen
        if chatTemplate != "auto" || records.contains(where: { $0.messages != nil }) {
            evaluator.chatTemplate = try ChatTemplate.resolve(chatTemplate, base: model.base)
            try evaluator.chatTemplate.check(records, path: dataFile)
        }
        let progress = ProgressLine()
        let onProgress: (Int, Int) -> Void = { done, total in
            if !noGenerate { progress.update("generating \(done)/\(total)", final: done == total) }
        }
        var report: EvaluationReport
        do {
            report = try groupBy.map { try evaluator.evaluate(records, groupBy: $0, generate: !noGenerate, progress: onProgress) }
                ?? evaluator.evaluate(records, generate: !noGenerate, progress: onProgress)
        } catch let error as TokenizerError {
            throw LoRAKitError.file(dataFile, "a record cannot be tokenized: \(error)")   // a GGUF vocabulary's refusal
        }
        if let baselineReport {
            printError(try EvaluationComparison.table(baseline: baselineReport, current: report).joined(separator: "\n"))
        } else if let groups = report.groups {
            func pad(_ s: String) -> String { s.count >= 14 ? s : s + String(repeating: " ", count: 14 - s.count) }
            var lines = [pad("group") + "  count  exact match      loss"]
            for key in groups.keys.sorted() {
                guard let g = groups[key] else { continue }
                lines.append(pad(key) + String(format: " %6d %12.3f %9.4f", g.count, g.exactMatch, g.loss))
            }
            lines.append(pad("all") + String(format: " %6d %12.3f %9.4f", report.count, report.exactMatch, report.loss))
            printError(lines.joined(separator: "\n"))
        }
        if let showExamples {
            report.examples = Array(report.examples.prefix(showExamples))
            if var groups = report.groups {
                for (key, group) in groups { groups[key]?.examples = Array(group.examples.prefix(showExamples)) }
                report.groups = groups
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }
}
