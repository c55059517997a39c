import Foundation
import MiniGPT
import Tensors

/// What `lora bench --generate N` prints.
public struct GenerationResult: Codable, Sendable {
    public var impl = "lora"
    public var params: Int
    public var promptTokens: Int
    public var newTokens: Int
    /// New tokens per second of the decode loop (one token at a time, greedy), the prompt excluded.
    public var tokensPerSecond: Double
    public var promptSeconds: Double
    public var decodeSeconds: Double
    public var peakRSSMiB: Double
    public var openblasCore: String
    public var threads: Int
    /// The prompt and the generated ids (to run and compare another implementation on the same weights).
    public var prompt: [Int32]
    public var tokens: [Int32]

    enum CodingKeys: String, CodingKey {
        case impl, params, threads, prompt, tokens
        case promptTokens = "prompt_tokens", newTokens = "new_tokens", tokensPerSecond = "tokens_per_s"
        case promptSeconds = "prompt_s", decodeSeconds = "decode_s", peakRSSMiB = "peak_rss_mib"
        case openblasCore = "openblas_core"
    }

    public func jsonLine() throws -> String {
        var rounded = self
        rounded.tokensPerSecond = (tokensPerSecond * 100).rounded() / 100
        rounded.promptSeconds = (promptSeconds * 10_000).rounded() / 10_000
        rounded.decodeSeconds = (decodeSeconds * 10_000).rounded() / 10_000
        rounded.peakRSSMiB = (peakRSSMiB * 10).rounded() / 10
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(rounded), as: UTF8.self)
    }
}

/// Generation throughput: the KV-cache loop of `lora generate` (`Generator` and a greedy `Sampler`), timed.
///
/// It generates exactly `newTokens` tokens — an end-of-sequence token does not stop it — so two
/// implementations compared on the same weights do the same amount of work.
public enum GenerationBenchmark {
    /// Runs `prompt` through the model, then `newTokens` greedy steps: pick the next token, append it.
    public static func run(model: LlamaModel, prompt: [Int32], newTokens: Int) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw LoRAKitError("the generation benchmark needs at least one prompt token") }
        guard newTokens >= 1 else { throw LoRAKitError("--generate must be at least 1, got \(newTokens)") }
        let generator = Generator(model: model, capacity: prompt.count + newTokens)
        var sampler = Sampler(temperature: 0)
        let started = DispatchTime.now().uptimeNanoseconds
        var logits = try generator.append(prompt)
        let prompted = DispatchTime.now().uptimeNanoseconds
        var tokens: [Int32] = []
        for _ in 0..<newTokens {
            let next = sampler.next(logits)
            tokens.append(next)
            logits = try generator.append([next])
        }
        let finished = DispatchTime.now().uptimeNanoseconds
        let decodeSeconds = Double(finished - prompted) / 1e9
        // each new token costs one pick and one pass of the model over it
        return GenerationResult(params: model.weights.parameterCount, promptTokens: prompt.count, newTokens: newTokens,
                                tokensPerSecond: Double(newTokens) / max(decodeSeconds, 1e-12),
                                promptSeconds: Double(prompted - started) / 1e9, decodeSeconds: decodeSeconds,
                                peakRSSMiB: peakResidentMiB(), openblasCore: Threads.blasCore,
                                threads: Threads.count, prompt: prompt, tokens: tokens)
    }

    /// `count` pseudo-random prompt ids after BOS, from `seed`, inside a vocabulary of `vocab` (ids ≥ 3, clear of
    /// the usual special tokens).
    public static func prompt(count: Int, vocab: Int, bos: Int32, seed: UInt64) -> [Int32] {
        var rng = RandomGenerator(seed: seed)
        let span = UInt64(max(1, vocab - 3))
        return [bos] + (1..<max(1, count)).map { _ in Int32(3 + rng.next() % span) }
    }
}
