// libFuzzer target: a GGUF file as a base model (Checkpoints.GGUFFile, MiniGPT.LlamaGGUF, the tokenizer built from
// its vocabulary). Any input must open and be read — every tensor dequantized, the config, the weights of a model
// small enough, the SentencePiece model of its vocabulary encoding and decoding a text — or throw an error naming
// the file; nothing may trap, and libsentencepiece must not crash on a vocabulary from the file.
import Checkpoints
import Foundation
import FuzzSupport
import MiniGPT
import Tensors
import Tokenizer

let scratch = ScratchFile(extension: "gguf")
/// Keeps the reads of tensor values from being optimised away.
var checksum: Float = 0

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzGGUF(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    scratch.write(bytes, count)
    func expected(_ error: Error) {
        guard let error = error as? LoRAKitError else { preconditionFailure("not a LoRAKitError: \(error)") }
        precondition(error.message.hasPrefix(scratch.path), "the error does not name the file: \(error.message)")
    }
    let file: GGUFFile
    do { file = try BaseModel.file(scratch.path) } catch { expected(error); return 0 }
    for info in file.tensors where info.count <= 1 << 20 {
        do {
            let tensor = try file.tensor(info.name)
            precondition(tensor.count == info.count, "\(info.name): \(tensor.count) values, the header says \(info.count)")
            if tensor.count > 0 { checksum += tensor[0] + tensor[tensor.count - 1] }
        } catch { expected(error) }
    }
    do {
        let config = try LlamaGGUF.config(of: file)
        if LlamaWeights.expectedShapes(config).reduce(0, { $0 + $1.shape.reduce(1, *) }) <= 1 << 20 {
            let weights = try LlamaGGUF.readModel(file, config: config)
            checksum += weights.finalNorm[0]
        }
    } catch { expected(error) }
    do {
        let vocabulary = try GGUFVocabulary(file: file)
        let model = vocabulary.sentencePieceModel.serialized()
        if let tokenizer = try? SentencePieceTokenizer(serializedModel: model, source: "fuzz"),
           let ids = try? tokenizer.encode("Hello wörld 12 🙂 <s>") {   // a vocabulary may be one encode refuses
            _ = try? tokenizer.decode(ids)
        }
    } catch { expected(error) }
    return 0
}

runFuzzer(fuzzGGUF)
