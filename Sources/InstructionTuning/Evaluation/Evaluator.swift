import Foundation
import MiniGPT
import Tensors
import Tokenizer

/// One evaluated record: what was asked, expected and answered.
public struct EvaluatedExample: Codable, Sendable {
    public var instruction: String
    public var input: String
    public var expected: String
    public var generated: String
    public var exactMatch: Bool

    enum CodingKeys: String, CodingKey {
        case instruction, input, expected, generated
        case exactMatch = "exact_match"
    }
}

/// The result of `lora eval`.
public struct EvaluationReport: Codable, Sendable {
    public var loss: Double
    public var perplexity: Double
    public var exactMatch: Double
    public var count: Int
    public var tokens: Int
    public var examples: [EvaluatedExample]
    /// Per value of a record label (`--group-by family`): the same figures for that group's records.
    public var groups: [String: EvaluationReport]?

    public init(loss: Double, perplexity: Double, exactMatch: Double, count: Int, tokens: Int,
                examples: [EvaluatedExample], groups: [String: EvaluationReport]?) {
        self.loss = loss; self.perplexity = perplexity; self.exactMatch = exactMatch
        self.count = count; self.tokens = tokens; self.examples = examples; self.groups = groups
    }

    enum CodingKeys: String, CodingKey {
        case loss, perplexity, count, tokens, examples, groups
        case exactMatch = "exact_match"
    }
}

/// Loss and perplexity on the response tokens, and exact match of greedy answers.
///
/// A greedy answer matches when it equals the expected output after trimming surrounding white space.
public struct Evaluator {
    public let model: LlamaModel
    public let tokenizer: SentencePieceTokenizer
    public let template: PromptTemplate
    /// How conversation records are written (`--chat-template`).
    public var chatTemplate: ChatTemplate = .llama2
    public var batchSize = 8
    public var maxSeqLen = 256
    /// Tokens generated beyond the expected answer's length before giving up on a match.
    public var extraTokens = 8

    public init(model: LlamaModel, tokenizer: SentencePieceTokenizer, template: PromptTemplate) {
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
    }

    /// Evaluates every record, and each group of records sharing a value of `label` (records without it form
    /// the group "(none)"). The overall figures are over all records.
    public func evaluate(_ records: [InstructionRecord], groupBy label: String, generate: Bool = true,
                         progress: (Int, Int) -> Void = { _, _ in }) throws -> EvaluationReport {
        var order: [String] = []
        var members: [String: [InstructionRecord]] = [:]
        for record in records {
            let key = record.labels[label] ?? "(none)"
            if members[key] == nil { order.append(key) }
            members[key, default: []].append(record)
        }
        var groups: [String: EvaluationReport] = [:]
        var done = 0
        for key in order {
            let subset = members[key] ?? []
            groups[key] = try evaluate(subset, generate: generate) { i, _ in progress(done + i, records.count) }
            done += subset.count
        }
        // Overall: token-weighted loss and record-weighted exact match, from the groups (no second pass).
        let reports = order.compactMap { groups[$0] }
        let tokens = reports.reduce(0) { $0 + $1.tokens }
        let loss = reports.reduce(0.0) { $0 + $1.loss * Double($1.tokens) } / Double(max(1, tokens))
        let matches = reports.reduce(0.0) { $0 + $1.exactMatch * Double($1.count) }
        return EvaluationReport(loss: loss, perplexity: exp(loss),
                                exactMatch: generate ? matches / Double(max(1, records.count)) : 0,
                                count: records.count, tokens: tokens, examples: reports.flatMap(\.examples),
                                groups: groups)
    }

    public func evaluate(_ records: [InstructionRecord], generate: Bool = true,
                         progress: (Int, Int) -> Void = { _, _ in }) throws -> EvaluationReport {
        let config = model.weights.config
        var encoder = ExampleEncoder(tokenizer: tokenizer, template: template, bosId: Int32(config.bosTokenId),
                                     eosId: Int32(config.eosTokenId), maskPrompt: true,
                                     maxSeqLen: maxSeqLen, overflow: .truncate)
        encoder.chatTemplate = chatTemplate
        let encoded = try encoder.encode(records).examples
        var sum = 0.0, count = 0, start = 0
        while start < encoded.count {
            let end = min(encoded.count, start + batchSize)
            let r = try model.loss(Batcher.makeTokenBatch(Array(encoded[start..<end]), maskPrompt: true),
                                   backward: false, training: false)
            sum += r.sum
            count += r.count
            start = end
        }
        let loss = sum / Double(max(1, count))

        var examples: [EvaluatedExample] = []
        if generate {
            var generator = Generator(model: model, capacity: maxSeqLen + extraTokens)
            let eos = Int32(config.eosTokenId)
            for (i, record) in records.enumerated() {
                let prompt = try encoder.promptIDs(for: record)
                let budget = try tokenizer.encode(record.output).count + extraTokens
                if prompt.count + budget > generator.capacity {
                    generator = Generator(model: model, capacity: prompt.count + budget)
                }
                var answer = ""
                do {
                    var sampler = Sampler(temperature: 0)
                    var ids = try generator.generate(prompt: prompt, maxNewTokens: budget, sampler: &sampler, stop: eos)
                    if ids.last == eos { ids.removeLast() }
                    answer = try tokenizer.decode(ids)
                }
                let match = answer.trimmingCharacters(in: .whitespacesAndNewlines)
                    == record.output.trimmingCharacters(in: .whitespacesAndNewlines)
                examples.append(EvaluatedExample(instruction: record.rawPrompt ?? record.instruction, input: record.input,
                                                 expected: record.output, generated: answer, exactMatch: match))
                progress(i + 1, records.count)
            }
        }
        let matches = examples.filter(\.exactMatch).count
        return EvaluationReport(loss: loss, perplexity: exp(loss),
                                exactMatch: examples.isEmpty ? 0 : Double(matches) / Double(examples.count),
                                count: records.count, tokens: count, examples: examples, groups: nil)
    }
}
