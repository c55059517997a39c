import Checkpoints
import Foundation
import Tensors
import Tokenizer

/// The base model a command is given with `--base`: a Hugging Face directory (`config.json`, `model.safetensors`,
/// `tokenizer.model`, optionally `tokenizer_config.json`) or a llama.cpp GGUF file, which holds all of it — the
/// hyper-parameters, the weights (F32, F16, BF16 or quantized, read back as F32) and the tokenizer.
public enum BaseModel {
    /// Whether `path` names a GGUF file: an existing file that is not a directory, or a path ending in `.gguf`.
    public static func isGGUF(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) { return !isDirectory.boolValue }
        return path.lowercased().hasSuffix(".gguf")
    }

    /// The model's hyper-parameters.
    public static func config(_ path: String) throws -> LlamaConfig {
        if isGGUF(path) { return try LlamaGGUF.config(of: try file(path)) }
        try checkDirectory(path)
        return try LlamaConfig.load(from: path + "/config.json")
    }

    /// The model's weights; see `LlamaWeights.load` for `quantization` and `inMemory`.
    public static func weights(_ path: String, quantization: BaseQuantization = .none,
                               inMemory: Bool = false) throws -> LlamaWeights {
        guard isGGUF(path) else { return try LlamaWeights.load(directory: path, quantization: quantization, inMemory: inMemory) }
        let gguf = try file(path)
        return try LlamaGGUF.readModel(gguf, config: try LlamaGGUF.config(of: gguf), quantization: quantization,
                                       inMemory: inMemory)
    }

    /// The model's tokenizer: the directory's `tokenizer.model`, or the SentencePiece model llama.cpp would
    /// build from a GGUF file's `tokenizer.ggml.*` vocabulary (`tokenizerModel(_:)`).
    public static func tokenizer(_ path: String) throws -> SentencePieceTokenizer {
        if isGGUF(path) {
            let bytes = try tokenizerModel(path)
            do { return try SentencePieceTokenizer(serializedModel: bytes, source: path + " (tokenizer.ggml.*)") }
            catch { throw LoRAKitError("\(error)") }
        }
        let file = path + "/tokenizer.model"
        guard FileManager.default.fileExists(atPath: file) else {
            throw LoRAKitError.file(path, "no tokenizer.model (a SentencePiece model is needed to encode text)")
        }
        do { return try SentencePieceTokenizer(modelPath: file) } catch { throw LoRAKitError("\(error)") }
    }

    /// The bytes of the base's SentencePiece model, as a `tokenizer.model` file holds them (for a GGUF file,
    /// built from its vocabulary), so that a model exported from it carries its tokenizer.
    public static func tokenizerModel(_ path: String) throws -> Data {
        if isGGUF(path) { return try GGUFVocabulary(file: try file(path)).sentencePieceModel.serialized() }
        let file = path + "/tokenizer.model"
        do { return try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            throw LoRAKitError.file(file, "cannot read: \(error.localizedDescription)")
        }
    }

    /// The Jinja source a `tokenizer_config.json` "chat_template" entry holds: the entry itself, or the "default"
    /// of transformers' list of named templates (its form for several); nil when it is neither.
    public static func chatTemplate(inTokenizerConfigEntry entry: Any) -> String? {
        (entry as? String) ?? (entry as? [[String: Any]])?.first { $0["name"] as? String == "default" }?["template"] as? String
    }

    /// The GGUF file at `path`; a file of another kind is refused saying what `--base` takes.
    public static func file(_ path: String) throws -> GGUFFile {
        if let handle = FileHandle(forReadingAtPath: path) {
            let magic = (try? handle.read(upToCount: 4)) ?? Data()
            try? handle.close()
            if magic != Data("GGUF".utf8) {
                throw LoRAKitError.file(path, "is neither a model directory nor a GGUF file (a base model is a Hugging Face "
                    + "directory with config.json, model.safetensors and tokenizer.model, or a llama.cpp .gguf file)")
            }
        }
        return try GGUFFile(path: path)
    }

    /// Refuses a path that is not a Hugging Face model directory, before anything is read from it.
    static func checkDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw LoRAKitError.file(path, "no such model directory (expected config.json, model.safetensors, tokenizer.model)")
        }
        guard FileManager.default.fileExists(atPath: path + "/config.json") else {
            throw LoRAKitError.file(path, "no config.json: not a Hugging Face model directory" + LlamaWeights.ggufHint(path))
        }
    }
}
