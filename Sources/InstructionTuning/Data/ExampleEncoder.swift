import Foundation
import MiniGPT
import Tensors
import Tokenizer

/// One tokenized training example: `[BOS] + encode(prompt) + encode(output) + [EOS]`, possibly truncated; or a
/// conversation in its chat template.
public struct EncodedExample: Equatable, Hashable, Sendable {
    /// The token ids, BOS first.
    public var ids: [Int32]
    /// How many leading ids are BOS and prompt: with the prompt masked, the target at position i (`ids[i + 1]`)
    /// counts only when `i + 1 >= promptLength`, so the targets are the output tokens and the EOS.
    public var promptLength: Int
    /// A conversation's learned tokens (its assistant messages and their EOS), for a masked prompt; nil: every
    /// token from `promptLength` on. `promptLength` is then where the first range starts.
    public var learnedRanges: [Range<Int>]?

    public init(ids: [Int32], promptLength: Int, learnedRanges: [Range<Int>]? = nil) {
        self.ids = ids
        self.promptLength = promptLength
        self.learnedRanges = learnedRanges
    }

    /// Whether the token at `position` is learned (is a target) when the prompt is masked.
    @inline(__always)
    public func isLearned(_ position: Int) -> Bool {
        guard position >= 1 && position < ids.count else { return false }
        guard let learnedRanges else { return position >= promptLength }
        return learnedRanges.contains { $0.contains(position) }
    }

    /// The number of positions that carry a loss: `ids.count - promptLength` with the prompt masked (a
    /// conversation: its learned tokens), `ids.count - 1` without.
    public func targetCount(maskPrompt: Bool) -> Int {
        guard maskPrompt else { return max(0, ids.count - 1) }
        guard let learnedRanges else { return max(0, ids.count - max(promptLength, 1)) }
        return learnedRanges.reduce(0) { $0 + max(0, min($1.upperBound, ids.count) - max($1.lowerBound, 1)) }
    }
}

/// Turns instruction records into token ids (DESIGN §4): the prompt and the output are encoded separately,
/// without BOS/EOS inside either, then joined as `[BOS] + prompt + output + [EOS]`.
public struct ExampleEncoder {
    /// What to do with an example longer than `maxSeqLen` tokens.
    public enum Overflow: String, Sendable, CaseIterable {
        /// Keep its first `maxSeqLen` tokens; skip it when no output token would remain.
        case truncate
        /// Leave it out.
        case skip
    }

    public let tokenizer: SentencePieceTokenizer
    public var template: PromptTemplate
    /// How conversation (`messages`) records become tokens.
    public var chatTemplate: ChatTemplate = .llama2
    public var bosId: Int32
    public var eosId: Int32
    /// Whether BOS and prompt positions carry no loss (the default); used by `tokenBatch(_:)`.
    public var maskPrompt: Bool
    /// The most tokens an example may have, BOS and EOS included.
    public var maxSeqLen: Int
    public var overflow: Overflow

    /// An encoder; `bosId` and `eosId` default to the tokenizer's (pass the model config's when they differ).
    public init(tokenizer: SentencePieceTokenizer, template: PromptTemplate = .alpaca, bosId: Int32? = nil,
                eosId: Int32? = nil, maskPrompt: Bool = true, maxSeqLen: Int, overflow: Overflow = .truncate) {
        self.tokenizer = tokenizer
        self.template = template
        self.bosId = bosId ?? tokenizer.bosId
        self.eosId = eosId ?? tokenizer.eosId
        self.maskPrompt = maskPrompt
        self.maxSeqLen = maxSeqLen
        self.overflow = overflow
    }

    /// The full example of `record`, not truncated.
    public func encode(_ record: InstructionRecord) throws -> EncodedExample {
        if let messages = record.messages {
            let (ids, learned) = try chatTemplate.encode(messages, tokenizer: tokenizer, bosId: bosId, eosId: eosId)
            return EncodedExample(ids: ids, promptLength: learned.first?.lowerBound ?? ids.count, learnedRanges: learned)
        }
        let prompt = try tokenizer.encode(template.prompt(for: record))
        let output = try tokenizer.encode(record.output)
        var ids: [Int32] = []
        ids.reserveCapacity(prompt.count + output.count + 2)
        ids.append(bosId)
        ids += prompt
        ids += output
        ids.append(eosId)
        return EncodedExample(ids: ids, promptLength: 1 + prompt.count)
    }

    /// The ids a generated answer to `record` follows: BOS and the prompt (a conversation: every message before the
    /// last, then what precedes an assistant message).
    public func promptIDs(for record: InstructionRecord) throws -> [Int32] {
        if let messages = record.messages {
            return try chatTemplate.promptIDs(Array(messages.dropLast()), tokenizer: tokenizer, bosId: bosId, eosId: eosId)
        }
        return [bosId] + (try tokenizer.encode(template.prompt(for: record)))
    }

    /// The examples of `records`, each at most `maxSeqLen` tokens, with the counts of truncated and skipped ones.
    ///
    /// With `.truncate` an example keeps its first `maxSeqLen` tokens, but is skipped when its BOS and prompt
    /// alone fill them (`promptLength >= maxSeqLen`: nothing of the response would be learned). With `.skip`
    /// every example that is too long is skipped. Throws when the special ids are not in the vocabulary,
    /// `maxSeqLen` is below 2, or every record is skipped.
    public func encode(_ records: [InstructionRecord]) throws
        -> (examples: [EncodedExample], truncated: Int, skipped: Int) {
        try checkSettings()
        try chatTemplate.check(records)
        var result: (examples: [EncodedExample], truncated: Int, skipped: Int) = ([], 0, 0)
        result.examples.reserveCapacity(records.count)
        for record in records {
            var example = try encode(record)
            if example.ids.count > maxSeqLen {
                guard overflow == .truncate, example.promptLength < maxSeqLen else {
                    result.skipped += 1
                    continue
                }
                example.ids.removeLast(example.ids.count - maxSeqLen)
                example.learnedRanges = example.learnedRanges?.compactMap { range in
                    range.lowerBound < maxSeqLen ? range.lowerBound..<min(range.upperBound, maxSeqLen) : nil
                }
                result.truncated += 1
            }
            result.examples.append(example)
        }
        if result.examples.isEmpty && !records.isEmpty {
            let advice = overflow == .truncate ? " (their BOS and prompt alone fill it); raise --max-seq-len"
                : "; raise --max-seq-len or truncate instead of skipping"
            throw LoRAKitError("all \(records.count) examples are longer than --max-seq-len \(maxSeqLen)\(advice)")
        }
        return result
    }

    /// A packed batch of `examples` with this encoder's prompt masking.
    public func tokenBatch(_ examples: [EncodedExample]) -> TokenBatch {
        Batcher.makeTokenBatch(examples, maskPrompt: maskPrompt)
    }

    private func checkSettings() throws {
        guard maxSeqLen >= 2 else {
            throw LoRAKitError("--max-seq-len must be at least 2 (BOS and one token to predict), not \(maxSeqLen)")
        }
        for (name, id) in [("BOS", bosId), ("EOS", eosId)] where id < 0 || Int(id) >= tokenizer.vocabSize {
            throw LoRAKitError.file(tokenizer.modelPath, id < 0
                ? "the tokenizer has no \(name) id; an instruction example needs one"
                : "the \(name) id \(id) is outside the vocabulary of \(tokenizer.vocabSize) pieces")
        }
    }
}
