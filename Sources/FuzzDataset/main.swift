// libFuzzer target: the instruction dataset reader (InstructionTuning.InstructionDataset): JSON arrays and
// JSONL, UTF-8 checks, error positions; and the prompt list of `generate --prompts` (PromptList) on the same bytes.
import FuzzSupport
import InstructionTuning
import Tensors

let scratch = ScratchFile(extension: "json")

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzDataset(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    scratch.write(bytes, count)
    do {
        let records = try InstructionDataset.load(path: scratch.path)
        precondition(!records.isEmpty, "a dataset loaded with no records")
    } catch let error as LoRAKitError {
        precondition(error.message.hasPrefix(scratch.path), "the error does not name the file: \(error.message)")
    } catch {
        preconditionFailure("not a LoRAKitError: \(error)")
    }
    do {
        let requests = try PromptList.load(path: scratch.path)
        precondition(!requests.isEmpty, "a prompt list loaded with no prompts")
        for request in requests {
            precondition(request.messages.map { $0.last?.role == .user } ?? true, "a conversation to answer ends with its answer")
        }
    } catch let error as LoRAKitError {
        precondition(error.message.hasPrefix(scratch.path), "the error does not name the file: \(error.message)")
    } catch {
        preconditionFailure("not a LoRAKitError: \(error)")
    }
    return 0
}

runFuzzer(fuzzDataset)
