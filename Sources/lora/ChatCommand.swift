import ArgumentParser
import Foundation
import InstructionTuning
import MiniGPT
import Tensors
import Tokenizer

/// `lora chat`: a conversation with a model on the terminal (mlx-lm's `chat`, llama.cpp's conversation mode).
struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk with a model: each line read is a user message, answered in the chat template.",
        discussion: """
            The conversation so far (after --system, if given) is written in --chat-template, as conversation \
            records are trained, and the answer is generated after it; answers join the conversation, whose keys \
            and values stay cached, so a turn costs its new tokens. On a terminal answers appear as they are \
            generated. A line ending in a backslash goes on on the next \
            line (a message of several lines, as in llama.cpp). An empty line is skipped, /reset starts a new \
            conversation, end of input (Ctrl-D) ends the chat.
            """)

    @OptionGroup var model: ModelOptions

    @Option(help: "Chat template: auto (the base's own, from its tokenizer_config.json; llama2 if it has none), llama2, mistral, zephyr, or a JSON file.")
    var chatTemplate: String = "auto"

    @Option(help: "A system message before the conversation.")
    var system: String?

    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        let (loaded, tokenizer) = try model.load(inMemory: true)
        let config = loaded.weights.config
        let bos = Int32(config.bosTokenId), eos = Int32(config.eosTokenId)
        let chat = try ChatTemplate.resolve(chatTemplate, base: model.base)
        let opening = system.map { [ChatMessage(role: .system, content: $0)] } ?? []
        if let problem = chat.problem(with: opening + [ChatMessage(role: .user, content: "")]) {
            throw LoRAKitError(problem)
        }
        let terminal = isatty(STDOUT_FILENO) != 0, typing = isatty(STDIN_FILENO) != 0
        if typing { printError("chat template \(chat.name); /reset starts over, Ctrl-D ends") }
        var conversation = opening
        var sampler = sampling.sampler()
        var generator = Generator(model: loaded, capacity: 0)
        while true {
            if typing { FileHandle.standardError.write(Data("> ".utf8)) }
            guard let message = Self.readMessage(prompting: typing) else { break }
            let text = message.trimmingCharacters(in: .whitespacesAndNewlines)
            if text.isEmpty { continue }
            if text == "/reset" {
                conversation = opening
                continue
            }
            conversation.append(ChatMessage(role: .user, content: text))
            let promptIDs = try chat.promptIDs(conversation, tokenizer: tokenizer, bosId: bos, eosId: eos)
            let needed = promptIDs.count + sampling.maxNewTokens
            if generator.capacity < needed {   // a larger cache starts empty: grow it by doubling, not per turn
                generator = Generator(model: loaded, capacity: max(needed, 2 * generator.capacity))
            }
            var stream = terminal ? TextStream(tokenizer: tokenizer, stop: eos) : nil
            // the conversation so far is in the cache: only the new turn runs
            let ids = try generator.generate(prompt: promptIDs, maxNewTokens: sampling.maxNewTokens, sampler: &sampler,
                                             stop: eos, reusingCache: true, onToken: { stream?.append($0) })
            let answer = try tokenizer.decode(ids.last == eos ? Array(ids.dropLast()) : ids)
            if stream != nil { stream?.finish(answer) } else { print(answer) }
            conversation.append(ChatMessage(role: .assistant, content: answer))
        }
    }

    /// One message from standard input: a line, or several when each but the last ends in a backslash (which is
    /// dropped; the lines keep their line breaks). A line typed or piped with CRLF ends in "\r": not part of the
    /// message. Nil at the end of input with nothing read.
    static func readMessage(prompting: Bool) -> String? {
        var lines: [String] = []
        while let raw = readLine() {
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : raw
            guard line.hasSuffix("\\") else { return (lines + [line]).joined(separator: "\n") }
            lines.append(String(line.dropLast()))
            if prompting { FileHandle.standardError.write(Data(". ".utf8)) }
        }
        return lines.isEmpty ? nil : lines.joined(separator: "\n")
    }
}
