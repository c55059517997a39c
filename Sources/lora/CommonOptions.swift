import ArgumentParser
import Foundation
import MiniGPT
import Targeting
import Tensors
import Tokenizer

/// Options every command that runs a model takes.
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and LoRAKit's loops (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func apply() { Threads.set(threads ?? Threads.available) }
}

/// How `generate` and `chat` pick tokens: how many, greedy or sampled.
struct SamplingOptions: ParsableArguments {
    @Option(help: "Maximum number of new tokens.")
    var maxNewTokens: Int = 128

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Nucleus sampling: keep the smallest set of tokens whose probability reaches P.")
    var topP: Float = 1

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    func validate() throws {
        // The KV cache is allocated up front for prompt + new tokens.
        if maxNewTokens < 1 || maxNewTokens > 1 << 20 {
            throw ValidationError("--max-new-tokens must be in 1...\(1 << 20), got \(maxNewTokens)")
        }
        if !(temperature >= 0) { throw ValidationError("--temperature must be >= 0, got \(temperature)") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
    }

    /// A fresh sampler with these settings.
    func sampler() -> Sampler { Sampler(temperature: temperature, topP: topP, seed: seed) }
}

/// `--grad-checkpoint`, for the commands that train.
struct GradientCheckpointOption: ParsableArguments {
    @Flag(name: .customLong("grad-checkpoint"),
          help: "Gradient checkpointing: keep only each block's input and run its forward again in the backward. Activation memory falls to about one block's worth plus an (N, dim) tensor per block, for about a third more compute; results are the same, bit for bit.")
    var enabled = false
}

/// Parses "5,17,9" (spaces allowed) into token ids.
func parseIDs(_ text: String, option: String) throws -> [Int32] {
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    guard !parts.isEmpty else { throw ValidationError("\(option) is empty: give comma-separated token ids, e.g. 1,5,17") }
    return try parts.enumerated().map { i, part in
        guard let id = Int32(part) else {
            throw ValidationError("\(option): entry \(i + 1) '\(part)' is not a token id (comma-separated integers, e.g. 1,5,17)")
        }
        return id
    }
}

/// Writes to standard error (progress and warnings never mix with a command's output).
func printError(_ text: String) {
    FileHandle.standardError.write((text + "\n").data(using: .utf8) ?? Data())
}

/// `--quantize none|nf4` and `--double-quant`: how the base's seven projections are stored (QLoRA).
struct QuantizationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Store the base's q, k, v, o, gate, up and down projections as none (F32) or nf4 (4-bit NormalFloat, QLoRA); embeddings, norms and the LM head stay F32.",
                               valueName: "scheme"))
    var quantize: String = "none"

    @Option(help: "With --quantize nf4: quantize the block scales too (8 bits in blocks of 256), as QLoRA's double quantization.")
    var doubleQuant: Bool = true

    func validate() throws {
        do { _ = try quantization } catch let error as LoRAKitError { throw ValidationError(error.message) }
    }

    var quantization: BaseQuantization {
        get throws { try BaseQuantization(scheme: quantize, doubleQuant: doubleQuant) }
    }
}

/// A base model and the adapters to apply to it (`--adapter DIR[:WEIGHT]`, repeatable: their outputs add up).
struct ModelOptions: ParsableArguments {
    @Option(help: "Base model: a Hugging Face directory (config.json, model.safetensors, tokenizer.model) or a llama.cpp GGUF file.")
    var base: String

    @Option(help: ArgumentHelp("A PEFT adapter directory to apply, optionally with a weight: DIR or DIR:0.5. Repeat to add several.",
                               valueName: "dir[:weight]"))
    var adapter: [String] = []

    @OptionGroup var quantization: QuantizationOptions

    /// The model with its adapters attached; `inMemory` copies the weights out of the memory map (for generation,
    /// see `LlamaWeights.load`).
    func loadModel(inMemory: Bool = false) throws -> LlamaModel {
        let weights = try BaseModel.weights(base, quantization: try quantization.quantization,
                                            inMemory: inMemory)
        let model = LlamaModel(weights: weights)
        try AdapterDirectory.attachAll(adapter, to: model)   // LoRA or AdaLoRA
        return model
    }

    /// The model with its adapters attached, and the base's tokenizer.
    func load(inMemory: Bool = false) throws -> (model: LlamaModel, tokenizer: SentencePieceTokenizer) {
        let model = try loadModel(inMemory: inMemory)
        return (model, try BaseModel.tokenizer(base))
    }
}
