import Foundation

/// An error a user can cause (a bad file, a wrong shape, an unknown option value).
///
/// The message says what is wrong and where: the file, line, record or tensor. The CLI prints it on one
/// line to stderr and exits non-zero; nothing in the library traps on user data.
public struct LoRAKitError: Error, CustomStringConvertible, LocalizedError, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }

    /// An error about a file: "`path`: message".
    public static func file(_ path: String, _ message: String) -> LoRAKitError {
        LoRAKitError("\(path): \(message)")
    }
}
