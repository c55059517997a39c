// libFuzzer target: the instruction dataset reader (InstructionTuning.InstructionDataset): JSON arrays and
// JSONL, UTF-8 checks, error positions.
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
    return 0
}

runFuzzer(fuzzDataset)
