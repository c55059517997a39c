import Foundation
import Tensors
import Tokenizer

/// Helpers for a base model directory as a whole.
public enum BaseModel {
    /// The directory's `tokenizer.model`, with a clear error when it is absent or corrupt.
    public static func tokenizer(directory: String) throws -> SentencePieceTokenizer {
        let path = directory + "/tokenizer.model"
        guard FileManager.default.fileExists(atPath: path) else {
            throw LoRAKitError.file(directory, "no tokenizer.model (a SentencePiece model is needed to encode text)")
        }
        do { return try SentencePieceTokenizer(modelPath: path) } catch { throw LoRAKitError("\(error)") }
    }
}
