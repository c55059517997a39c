import ArgumentParser
import Checkpoints
import Foundation
import MiniGPT
import Tensors
import Tokenizer

struct Forward: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the model on one sequence and write its logits.",
        discussion: "Writes F32 logits of shape [T, vocab] under the key \"logits\" to a safetensors file.")

    @OptionGroup var model: ModelOptions

    @Option(help: "Comma-separated token ids, e.g. 1,5,17 (no BOS is added).")
    var ids: String?

    @Option(help: "Text to encode with the base's tokenizer.model; BOS is prepended.")
    var text: String?

    @Option(help: "Output safetensors file.")
    var out: String

    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if (ids == nil) == (text == nil) { throw ValidationError("give exactly one of --ids or --text") }
    }

    func run() throws {
        runtime.apply()
        let loaded = try model.loadModel()
        let weights = loaded.weights
        let tokens: [Int32]
        if let ids {
            tokens = try parseIDs(ids, option: "--ids")
        } else {
            let tokenizer = try BaseModel.tokenizer(model.base)
            tokens = [Int32(weights.config.bosTokenId)] + (try tokenizer.encode(text ?? ""))
        }
        let logits = try loaded.logits(TokenBatch(sequences: [tokens]))
        let shaped = Tensor(borrowing: logits.data, shape: [tokens.count, weights.dims.vocab], owner: logits)
        try SafeTensorsWriter.write([(name: "logits", tensor: shaped)], metadata: ["format": "pt"], to: out)
        printError("wrote logits [\(tokens.count), \(weights.dims.vocab)] to \(out)")
    }
}
