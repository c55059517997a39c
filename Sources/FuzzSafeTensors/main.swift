// libFuzzer target: the safetensors header parser and tensor reads (Checkpoints.SafeTensorsFile).
// Any input must either open and read back every tensor, or throw a LoRAKitError; nothing may trap or read
// outside the mapping (scripts/fuzz.sh builds with AddressSanitizer too).
import Checkpoints
import FuzzSupport
import Tensors

let scratch = ScratchFile(extension: "safetensors")
/// Keeps the reads of tensor values from being optimised away.
var checksum: Float = 0

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzSafeTensors(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    scratch.write(bytes, count)
    let file: SafeTensorsFile
    do {
        file = try SafeTensorsFile(path: scratch.path)
    } catch let error as LoRAKitError {
        precondition(error.message.hasPrefix(scratch.path), "the error does not name the file: \(error.message)")
        return 0
    } catch {
        preconditionFailure("not a LoRAKitError: \(error)")
    }
    for name in file.names {
        guard let info = file.info(name), let tensor = try? file.tensor(name) else { continue }
        precondition(tensor.count == info.count, "\(name): tensor has \(tensor.count) values, header says \(info.count)")
        // Touch the first and last value: both must lie inside the mapping.
        if tensor.count > 0 { checksum += tensor[0] + tensor[tensor.count - 1] }
    }
    _ = file.metadata
    return 0
}

runFuzzer(fuzzSafeTensors)
