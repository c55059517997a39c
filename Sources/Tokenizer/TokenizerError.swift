import Foundation

/// An error a user can cause with a tokenizer: a missing or corrupt model file, an id outside the vocabulary,
/// training input the trainer cannot use.
///
/// The message is one line and names the file or id. Tokenizer depends only on CSentencePiece, so this is its
/// own type rather than `LoRAKitError`; the CLI prints either the same way.
public struct TokenizerError: Error, CustomStringConvertible, LocalizedError, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }

    /// An error about a file: "`path`: message".
    static func file(_ path: String, _ message: String) -> TokenizerError {
        TokenizerError("\(path): \(message)")
    }
}
