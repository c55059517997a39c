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
            Alpaca by default); --prompt sends raw text instead. With --chat-template the instruction is a user \
            message of a conversation (after --system, if given), written as in fine-tuning on {"messages"} records. \
            Greedy at --temperature 0 (the default).

            --prompts FILE.jsonl answers many prompts with one loaded base, each with its own adapters: one JSON \
            object per line, {"instruction": …, "input": …, "adapters": ["DIR", "DIR2:0.5"]} (or "adapter": "DIR", \
            or "prompt": raw text, or "messages": a conversation ending with a user message, in --chat-template, \
            auto by default); without "adapters" a line uses the --adapter list, with [] the base alone. Each \
            adapter is read once and switched in and out; one JSON line is printed per prompt.
            """)

    @OptionGroup var model: ModelOptions

    @Option(help: "The instruction.")
    var instruction: String?

    @Option(help: "Optional input (context) for the instruction.")
    var input: String?

    @Option(help: "Raw prompt text, sent without a template (instead of --instruction).")
    var prompt: String?

    @Option(help: ArgumentHelp("A JSONL file of prompts, each with its own adapters (see above).", valueName: "file.jsonl"))
    var prompts: String?

    @Option(help: "Prompt template: alpaca, or a JSON file with prompt_input and prompt_no_input.")
    var template: String = "alpaca"

    @Option(help: "Send --instruction as a user message in this chat template (auto: the base's own, from its tokenizer_config.json; llama2, mistral, zephyr, or a JSON file), as conversation records are trained.")
    var chatTemplate: String?

    @Option(help: "With --chat-template: a system message before the instruction.")
    var system: String?

    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if [instruction, prompt, prompts].compactMap({ $0 }).count != 1 {
            throw ValidationError("give exactly one of --instruction, --prompt or --prompts")
        }
        if input != nil && instruction == nil { throw ValidationError("--input goes with --instruction") }
        if chatTemplate != nil && prompts == nil && (instruction == nil || input != nil || template != "alpaca") {
            throw ValidationError("--chat-template sends --instruction as a user message (without --input or --template)")
        }
        if system != nil && (chatTemplate == nil || prompts != nil) {
            throw ValidationError("--system goes with --chat-template and --instruction (a --prompts line gives its own)")
        }
        if prompt != nil && template != "alpaca" { throw ValidationError("--template formats --instruction; --prompt is sent as it is") }
    }

    func run() throws {
        runtime.apply()
        if let prompts { return try answerAll(listPath: prompts) }
        let promptTemplate = try PromptTemplate.named(template)
        let (loaded, tokenizer) = try model.load(inMemory: true)
        let weights = loaded.weights
        let promptIDs: [Int32]
        if let chatTemplate {
            let chat = try ChatTemplate.resolve(chatTemplate, base: model.base)
            let conversation = (system.map { [ChatMessage(role: .system, content: $0)] } ?? [])
                + [ChatMessage(role: .user, content: instruction ?? "")]
            if let problem = chat.problem(with: conversation) { throw LoRAKitError(problem) }
            promptIDs = try chat.promptIDs(conversation, tokenizer: tokenizer, bosId: Int32(weights.config.bosTokenId),
                                       eosId: Int32(weights.config.eosTokenId))
        } else {
            let text = prompt ?? promptTemplate.prompt(instruction: instruction ?? "", input: input ?? "")
            promptIDs = [Int32(weights.config.bosTokenId)] + (try tokenizer.encode(text))
        }
        let generator = Generator(model: loaded, capacity: promptIDs.count + sampling.maxNewTokens)
        var sampler = sampling.sampler()
        let eos = Int32(weights.config.eosTokenId)
        // On a terminal the answer appears as it is generated; a pipe or file gets it in one piece.
        var stream = isatty(STDOUT_FILENO) != 0 ? TextStream(tokenizer: tokenizer, stop: eos) : nil
        let started = Date()
        let ids = try generator.generate(prompt: promptIDs, maxNewTokens: sampling.maxNewTokens, sampler: &sampler,
                                         stop: eos, onToken: { stream?.append($0) })
        let seconds = Date().timeIntervalSince(started)
        let answer = try tokenizer.decode(ids.last == eos ? Array(ids.dropLast()) : ids)
        if stream != nil { stream?.finish(answer) } else { print(answer) }
        printError(String(format: "%d tokens in %.2f s (%.1f tokens/s, prompt %d tokens)", ids.count, seconds,
                          Double(ids.count) / max(seconds, 1e-9), promptIDs.count))
    }

    /// --prompts: every request of the file against one loaded base, switching adapters between them.
    private func answerAll(listPath: String) throws {
        let promptTemplate = try PromptTemplate.named(template)
        let requests = try PromptList.load(path: listPath)
        let weights = try BaseModel.weights(model.base, inMemory: true)
        let tokenizer = try BaseModel.tokenizer(model.base)
        let library = AdapterLibrary(model: LlamaModel(weights: weights))
        let bos = Int32(weights.config.bosTokenId), eos = Int32(weights.config.eosTokenId)
        // the base's chat template (auto) is looked up only when a line is a conversation; a named one is checked
        let chat = chatTemplate != nil || requests.contains(where: { $0.messages != nil })
            ? try ChatTemplate.resolve(chatTemplate ?? "auto", base: model.base) : ChatTemplate.llama2
        let encoded = try requests.map { request in
            if let messages = request.messages, let problem = chat.problem(with: messages) {
                throw LoRAKitError.file(listPath, "line \(request.line): \(problem)")
            }
            do {
                if let messages = request.messages { return try chat.promptIDs(messages, tokenizer: tokenizer, bosId: bos, eosId: eos) }
                return [bos] + (try tokenizer.encode(request.prompt ?? promptTemplate.prompt(instruction: request.instruction ?? "", input: request.input)))
            } catch {
                throw LoRAKitError.file(listPath, "line \(request.line): \(error)")
            }
        }
        let generator = Generator(model: library.model, capacity: (encoded.map(\.count).max() ?? 0) + sampling.maxNewTokens)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for (request, promptIDs) in zip(requests, encoded) {
            let adapters = request.adapters ?? model.adapter
            do {
                try library.activate(adapters)
            } catch let error as LoRAKitError {
                throw LoRAKitError.file(listPath, "line \(request.line): \(error.message)")
            }
            var sampler = sampling.sampler()
            let started = Date()
            let ids = try generator.generate(prompt: promptIDs, maxNewTokens: sampling.maxNewTokens, sampler: &sampler, stop: eos)
            let seconds = Date().timeIntervalSince(started)
            let answer = ids.last == eos ? Array(ids.dropLast()) : ids
            let line = PromptAnswer(line: request.line, adapters: adapters, output: try tokenizer.decode(answer),
                                    newTokens: ids.count, tokensPerSecond: (Double(ids.count) / max(seconds, 1e-9) * 10).rounded() / 10)
            print(String(decoding: try encoder.encode(line), as: UTF8.self))
        }
        printError("\(requests.count) prompts, \(library.count) adapter(s) loaded once, one base")
    }
}

/// One line of `lora generate --prompts` output.
private struct PromptAnswer: Encodable {
    let line: Int
    let adapters: [String]
    let output: String
    let newTokens: Int
    let tokensPerSecond: Double

    enum CodingKeys: String, CodingKey {
        case line, adapters, output
        case newTokens = "new_tokens"
        case tokensPerSecond = "tokens_per_s"
    }
}
