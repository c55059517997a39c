// libFuzzer target: the prompt template parser (InstructionTuning.PromptTemplate) and the placeholder
// substitution, with values that hold placeholders and multi-byte characters themselves.
import FuzzSupport
import InstructionTuning
import Tensors

let scratch = ScratchFile(extension: "json")

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzTemplate(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    scratch.write(bytes, count)
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

runFuzzer(fuzzTemplate)
