// libFuzzer target: the Hugging Face config.json parser (Checkpoints.LlamaConfig).
// Any input must decode to a configuration that passes validate() (and re-encodes to itself), or throw.
import Checkpoints
import Foundation
import FuzzSupport
import Tensors

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzModelConfig(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = bytes.map { Data(bytes: $0, count: count) } ?? Data()
    let config: LlamaConfig
    do {
        config = try LlamaConfig.decode(data, source: "config.json")
    } catch let error as LoRAKitError {
        precondition(error.message.hasPrefix("config.json: "), "the error does not name the file: \(error.message)")
        return 0
    } catch {
        preconditionFailure("not a LoRAKitError: \(error)")
    }
    // decode validates: what it returns must describe a model.
    do { try config.validate() } catch { preconditionFailure("decode returned an invalid config: \(error)") }
    // The products the model code forms with trapping arithmetic (ModelDimensions, LlamaWeights, the RoPE
    // table): validate() must have ruled out every overflow.
    let hidden = config.hiddenSize
    _ = (config.qDim * hidden * 4, config.kvDim * hidden * 4, config.intermediateSize * hidden * 4,
         config.vocabSize * hidden * 4, config.maxPositionEmbeddings * config.headDim)
    // Written back, it must read as the same configuration.
    if let encoded = try? JSONEncoder().encode(config) {
        let again = try? LlamaConfig.decode(encoded, source: "re-encoded")
        precondition(again == config, "config does not survive a write and a read: \(config) vs \(String(describing: again))")
    }
    return 0
}

runFuzzer(fuzzModelConfig)
