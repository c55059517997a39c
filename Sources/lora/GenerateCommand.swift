import ArgumentParser
import Foundation
import InstructionTuning
import MiniGPT
import Targeting
import Tensors
import Tokenizer

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a response to an instruction.",
        discussion: """
            The instruction (and optional input) is formatted with the prompt template, as in fine-tuning (--template, \
            Alpaca by default); --prompt sends raw text instead. Greedy at --temperature 0 (the default).
            """)

    @OptionGroup var model: ModelOptions

    @Option(help: "The instruction.")
    var instruction: String?

    @Option(help: "Optional input (context) for the instruction.")
    var input: String?

    @Option(help: "Raw prompt text, sent without a template (instead of --instruction).")
    var prompt: String?

    @Option(help: "Prompt template: alpaca, or a JSON file with prompt_input and prompt_no_input.")
    var template: String = "alpaca"

    @Option(help: "Maximum number of new tokens.")
    var maxNewTokens: Int = 128

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Nucleus sampling: keep the smallest set of tokens whose probability reaches P.")
    var topP: Float = 1

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if (instruction == nil) == (prompt == nil) { throw ValidationError("give exactly one of --instruction or --prompt") }
        if input != nil && instruction == nil { throw ValidationError("--input goes with --instruction") }
        if prompt != nil && template != "alpaca" { throw ValidationError("--template formats --instruction; --prompt is sent as it is") }
        if maxNewTokens < 1 { throw ValidationError("--max-new-tokens must be at least 1, got \(maxNewTokens)") }
        // The KV cache is allocated up front for prompt + new tokens.
        if maxNewTokens > 1 << 20 { throw ValidationError("--max-new-tokens must be at most \(1 << 20), got \(maxNewTokens)") }
        if !(temperature >= 0) { throw ValidationError("--temperature must be >= 0, got \(temperature)") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
    }

    func run() throws {
        runtime.apply()
        let promptTemplate = try PromptTemplate.named(template)
        let (loaded, tokenizer) = try model.load()
        let weights = loaded.weights
        let text = prompt ?? promptTemplate.prompt(instruction: instruction ?? "", input: input ?? "")
        let promptIDs = [Int32(weights.config.bosTokenId)] + tokenizer.encode(text)
        let generator = Generator(model: loaded, capacity: promptIDs.count + maxNewTokens)
        var sampler = Sampler(temperature: temperature, topP: topP, seed: seed)
        let started = Date()
        let ids = try generator.generate(prompt: promptIDs, maxNewTokens: maxNewTokens, sampler: &sampler,
                                         stop: Int32(weights.config.eosTokenId))
        let seconds = Date().timeIntervalSince(started)
        let answer = ids.last == Int32(weights.config.eosTokenId) ? Array(ids.dropLast()) : ids
        print(try tokenizer.decode(answer))
        printError(String(format: "%d tokens in %.2f s (%.1f tokens/s, prompt %d tokens)", ids.count, seconds,
                          Double(ids.count) / max(seconds, 1e-9), promptIDs.count))
    }
}
