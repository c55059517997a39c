import ArgumentParser
import Foundation
import MiniGPT
import Tokenizer

/// `lora tokenizer train|encode|decode`: SentencePiece models from the command line (DESIGN §3).
struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Train a SentencePiece tokenizer, or encode and decode text with one.",
        subcommands: [Train.self, Encode.self, Decode.self])
}

extension TokenizerCommand {
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a SentencePiece model on text files.",
            discussion: """
                LLaMA-style settings: <unk> 0, <s> 1, </s> 2, no pad; byte fallback, so no text is ever <unk>; \
                digits split one by one; text kept as written, so decoding gives back the exact input. \
                Each line of an input file is one sentence. Training is deterministic (one thread).
                """)

        @Option(name: .long, parsing: .upToNextOption,
                help: ArgumentHelp("Training text files, UTF-8, one sentence per line (list several, or repeat the option).",
                                   valueName: "file"))
        var input: [String] = []

        @Option(help: "Number of pieces, counting <unk>, <s>, </s> and the 256 byte pieces.")
        var vocabSize: Int

        @Option(help: ArgumentHelp("Where to write the model; an existing file is replaced atomically.", valueName: "file.model"))
        var out: String

        @Option(help: ArgumentHelp("Segmentation algorithm: bpe or unigram.", valueName: "bpe|unigram"))
        var modelType: String = SentencePieceTokenizer.ModelType.bpe.rawValue

        @Option(help: "Share of characters that get their own piece, in (0, 1]; the rest are spelled in bytes.")
        var characterCoverage: Double = 1.0

        @Option(name: .customLong("user-defined-symbol"),
                help: "A piece that encoding always keeps whole, such as a separator token (repeatable).")
        var userDefinedSymbols: [String] = []

        @Flag(help: "Show the trainer's progress log on stderr.")
        var verbose = false

        func validate() throws {
            if input.isEmpty { throw ValidationError("give at least one --input file") }
            if vocabSize <= 0 { throw ValidationError("--vocab-size must be positive, not \(vocabSize)") }
            if SentencePieceTokenizer.ModelType(rawValue: modelType) == nil {
                throw ValidationError("--model-type must be bpe or unigram, not '\(modelType)'")
            }
            if !(characterCoverage > 0 && characterCoverage <= 1) {
                throw ValidationError("--character-coverage must be in (0, 1], not \(characterCoverage)")
            }
        }

        func run() throws {
            let type = SentencePieceTokenizer.ModelType(rawValue: modelType) ?? .bpe
            let tokenizer = try SentencePieceTokenizer.train(
                inputFiles: input, vocabSize: vocabSize, modelType: type, outputPath: out,
                characterCoverage: characterCoverage, userDefinedSymbols: userDefinedSymbols, verbose: verbose)
            var byteCount = 0
            var specialCount = 0
            for id in 0..<Int32(tokenizer.vocabSize) {
                switch try tokenizer.pieceType(id) {
                case .byte: byteCount += 1
                case .unknown, .control: specialCount += 1
                default: break
                }
            }
            let inputBytes = input.reduce(0) { total, path in
                total + ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
            }
            print("wrote \(out): \(type.rawValue) model, \(tokenizer.vocabSize) pieces (\(specialCount) special, "
                + "\(byteCount) byte), trained on \(input.count) file\(input.count == 1 ? "" : "s") of \(inputBytes) bytes")
        }
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the piece ids of a text, comma-separated on one line (no BOS or EOS added).")

        @Option(help: ArgumentHelp("The SentencePiece model, or a llama.cpp GGUF file (its vocabulary).", valueName: "file.model"))
        var model: String

        @Option(help: "The text to encode.")
        var text: String?

        @Option(help: ArgumentHelp("A UTF-8 file to encode, all of it (newlines included).", valueName: "file"))
        var file: String?

        func validate() throws {
            if (text == nil) == (file == nil) { throw ValidationError("give exactly one of --text and --file") }
        }

        func run() throws {
            let tokenizer = try loadTokenizer(model)
            let input: String
            if let file {
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw TokenizerError("\(file): cannot read the file to encode (missing or unreadable)")
                }
                guard let decoded = String(data: data, encoding: .utf8) else {
                    throw TokenizerError("\(file): not UTF-8 text")
                }
                input = decoded
            } else {
                input = text ?? ""
            }
            print(try tokenizer.encode(input).map(String.init).joined(separator: ","))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the text of comma-separated piece ids.")

        @Option(help: ArgumentHelp("The SentencePiece model, or a llama.cpp GGUF file (its vocabulary).", valueName: "file.model"))
        var model: String

        @Option(help: ArgumentHelp("Piece ids separated by commas, such as 5,17,9.", valueName: "ids"))
        var ids: String

        func validate() throws { _ = try Self.parseIds(ids) }

        func run() throws {
            let tokenizer = try loadTokenizer(model)
            print(try tokenizer.decode(Self.parseIds(ids)))
        }

        /// "5, 17,9" -> [5, 17, 9]; an empty list is allowed, an empty or non-integer item is not.
        static func parseIds(_ list: String) throws -> [Int32] {
            let trimmed = list.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { return [] }
            return try trimmed.split(separator: ",", omittingEmptySubsequences: false).enumerated().map { index, item in
                let field = item.trimmingCharacters(in: .whitespaces)
                guard let id = Int32(field) else {
                    throw ValidationError("--ids: item \(index + 1), '\(field)', is not an integer id "
                        + "(expected comma-separated ids such as 5,17,9)")
                }
                return id
            }
        }
    }
}

/// A `tokenizer.model` file, or the tokenizer of a GGUF file's vocabulary (as `--base model.gguf` uses it).
private func loadTokenizer(_ path: String) throws -> SentencePieceTokenizer {
    path.lowercased().hasSuffix(".gguf") ? try BaseModel.tokenizer(path) : try SentencePieceTokenizer(modelPath: path)
}
