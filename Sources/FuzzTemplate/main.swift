// libFuzzer target: the prompt template parser (InstructionTuning.PromptTemplate) and the placeholder
// substitution, with values that hold placeholders and multi-byte characters themselves; and the chat template
// parser (ChatTemplate) on the same bytes, with a conversation rendered through what it read.
import FuzzSupport
import InstructionTuning
import Tensors

let scratch = ScratchFile(extension: "json")

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzTemplate(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    scratch.write(bytes, count)
    checkChatTemplate()
    let template: PromptTemplate
    do {
        template = try PromptTemplate.load(path: scratch.path)
    } catch let error as LoRAKitError {
        precondition(error.message.hasPrefix(scratch.path), "the error does not name the file: \(error.message)")
        return 0
    } catch {
        preconditionFailure("not a LoRAKitError: \(error)")
    }
    let instruction = "say {input} é\u{301}", input = "{instruction} 🙂"
    let withInput = template.prompt(instruction: instruction, input: input)
    let withoutInput = template.prompt(instruction: instruction, input: "")
    // Substitution only adds text: the values appear in full.
    precondition(containsBytes(withInput, instruction) && containsBytes(withInput, input), "prompt_input lost a value")
    precondition(containsBytes(withoutInput, instruction), "prompt_no_input lost the instruction")
    return 0
}

/// The chat template in the scratch file, if it is one: every message's content comes out in the rendering.
func checkChatTemplate() {
    let chat: ChatTemplate
    do {
        chat = try ChatTemplate.load(path: scratch.path)
    } catch let error as LoRAKitError {
        precondition(error.message.hasPrefix(scratch.path), "the error does not name the file: \(error.message)")
        return
    } catch {
        preconditionFailure("not a LoRAKitError: \(error)")
    }
    let messages = [ChatMessage(role: .user, content: "{content} é\u{301}"), ChatMessage(role: .assistant, content: "🙂")]
    let text = chat.render(messages).compactMap { piece -> String? in
        if case .text(let text) = piece.segment { return text }
        return nil
    }.joined()
    for message in messages { precondition(containsBytes(text, message.content), "a message was lost") }
    precondition(chat.render(messages).contains { $0.learned }, "nothing of the answer is learned")
}

runFuzzer(fuzzTemplate)
