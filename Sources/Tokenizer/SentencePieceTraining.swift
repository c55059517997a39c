import CSentencePiece
import Foundation

extension SentencePieceTokenizer {
    /// The segmentation algorithm a model is trained with.
    public enum ModelType: String, Sendable, CaseIterable {
        /// Byte-pair encoding: merges the most frequent pair, repeatedly (LLaMA's tokenizers).
        case bpe
        /// A unigram language model pruned to the vocabulary size (SentencePiece's default).
        case unigram
    }

    /// Longer lines are skipped by the trainer (SentencePiece's and LLaMA's limit).
    static let maxSentenceBytes = 4192

    /// The trainer keeps global state (log level, pretokenizer), so one training runs at a time.
    private static let trainingLock = NSLock()

    /// Trains a SentencePiece model on text files and writes it to `outputPath`, then loads it.
    ///
    /// The settings are LLaMA's: ids `<unk>` 0, `<s>` 1, `</s>` 2, no pad; byte fallback (no text is ever
    /// `<unk>`); digits split one by one; text kept as written (normalization "identity", whitespace not
    /// collapsed), so `decode(encode(text)) == text`. One trainer thread, so the same input gives the same model.
    /// Each line of an input file is one sentence; lines over 4192 bytes are skipped. The model is written
    /// atomically: an interrupted run leaves either the old file or the new one.
    ///
    /// - Parameters:
    ///   - inputFiles: UTF-8 text files; a path may not contain a comma (the trainer splits its input list at commas).
    ///   - vocabSize: the number of pieces, including the 3 special pieces and, with byte fallback, 256 byte pieces.
    ///   - characterCoverage: the share of characters that get their own piece (1.0: all; CJK corpora use ~0.9995).
    ///   - userDefinedSymbols: pieces that encoding always keeps whole, such as a separator token.
    ///   - verbose: let the trainer log its progress to stderr.
    /// - Returns: the trained model, loaded from `outputPath`.
    @discardableResult
    public static func train(inputFiles: [String], vocabSize: Int, modelType: ModelType = .unigram,
                             outputPath: String, characterCoverage: Double = 1.0, byteFallback: Bool = true,
                             splitDigits: Bool = true, userDefinedSymbols: [String] = [],
                             verbose: Bool = false) throws -> SentencePieceTokenizer {
        try checkInputs(inputFiles)
        guard vocabSize > 0 else { throw TokenizerError("vocab size must be positive, not \(vocabSize)") }
        guard characterCoverage > 0, characterCoverage <= 1 else {
            throw TokenizerError("character coverage must be in (0, 1], not \(characterCoverage)")
        }
        if let bad = userDefinedSymbols.first(where: { $0.isEmpty || $0.contains(",") || $0.contains(" ") }) {
            throw TokenizerError("user-defined symbol \"\(bad)\" must be non-empty, without commas or spaces")
        }

        var options: [(String, String)] = [
            ("input", inputFiles.joined(separator: ",")),
            ("model_type", modelType.rawValue),
            ("vocab_size", String(vocabSize)),
            ("character_coverage", String(characterCoverage)),
            ("byte_fallback", String(byteFallback)),
            ("split_digits", String(splitDigits)),
            ("unk_id", "0"), ("bos_id", "1"), ("eos_id", "2"), ("pad_id", "-1"),
            ("unk_piece", "<unk>"), ("bos_piece", "<s>"), ("eos_piece", "</s>"),
            ("normalization_rule_name", "identity"),
            ("remove_extra_whitespaces", "false"),
            ("num_threads", "1"),
            ("max_sentence_length", String(maxSentenceBytes)),
            // 2 = errors only: the trainer's progress (and its warnings) would otherwise flood stderr.
            ("minloglevel", verbose ? "0" : "2"),
        ]
        if !userDefinedSymbols.isEmpty { options.append(("user_defined_symbols", userDefinedSymbols.joined(separator: ","))) }

        let model = try trainingLock.withLock { try runTrainer(options) }
        let writeURL = URL(fileURLWithPath: outputPath)
        do {
            // .atomic writes a temporary file beside the target, then renames it over the exact path.
            try model.write(to: writeURL, options: .atomic)
        } catch {
            throw TokenizerError.file(outputPath, "cannot write the tokenizer model (\(error.localizedDescription))")
        }
        return try SentencePieceTokenizer(modelPath: outputPath)
    }

    private static func checkInputs(_ inputFiles: [String]) throws {
        guard !inputFiles.isEmpty else { throw TokenizerError("no input files to train the tokenizer on") }
        for path in inputFiles {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw TokenizerError.file(path, "no such training file")
            }
            if isDirectory.boolValue { throw TokenizerError.file(path, "is a directory, not a training text file") }
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw TokenizerError.file(path, "cannot read the training file (permission denied)")
            }
            if path.contains(",") {
                throw TokenizerError.file(path, "a training file's path may not contain a comma "
                    + "(SentencePiece separates input files with commas); rename or link it")
            }
        }
    }

    /// Runs the trainer on `options` (spm_train flag names and values) and returns the serialized model.
    private static func runTrainer(_ options: [(String, String)]) throws -> Data {
        let names = options.map { strdup($0.0) }
        let values = options.map { strdup($0.1) }
        defer {
            names.forEach { free($0) }
            values.forEach { free($0) }
        }
        var model: UnsafeMutableRawPointer?
        var size = 0
        var error: UnsafeMutablePointer<CChar>?
        let status = names.map { UnsafePointer($0) }.withUnsafeBufferPointer { namePointers in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { valuePointers in
                csp_train(namePointers.baseAddress, valuePointers.baseAddress, options.count, &model, &size, &error)
            }
        }
        guard status == 0, let model else {
            let inputs = options.first { $0.0 == "input" }?.1.replacingOccurrences(of: ",", with: ", ") ?? ""
            let vocabSize = options.first { $0.0 == "vocab_size" }?.1 ?? "?"
            throw TokenizerError(trainerMessage(takeMessage(error), inputs: inputs, vocabSize: vocabSize))
        }
        defer { csp_free_bytes(model) }
        return Data(bytes: model, count: size)
    }

    /// The trainer's error, rephrased as one line that says what to change.
    static func trainerMessage(_ message: String, inputs: String, vocabSize: String) -> String {
        let oneLine = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        func numbers(after marker: String) -> [Int] {
            guard let range = oneLine.range(of: marker) else { return [] }
            return oneLine[range.upperBound...].split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        }
        if oneLine.contains("sentences_.empty()") {
            return "\(inputs): no training text (the files are empty, or hold only blank lines or lines longer than "
                + "\(maxSentenceBytes) bytes, which the trainer skips)"
        }
        if oneLine.contains("Vocabulary size is smaller than required_chars") {
            let needed = numbers(after: "required_chars.").dropFirst().first.map(String.init) ?? "more"
            return "\(inputs): vocab size \(vocabSize) is too small for this text: it needs at least \(needed) pieces "
                + "(one per distinct character, the 3 special pieces and, with byte fallback, 256 byte pieces)"
        }
        if oneLine.contains("Vocabulary size too high") {
            let most = numbers(after: "value <=").first.map(String.init) ?? "fewer"
            return "\(inputs): vocab size \(vocabSize) is too large for this text: it yields at most \(most) pieces; "
                + "lower the vocab size or add text"
        }
        return "\(inputs): training the tokenizer failed: \(oneLine)"
    }
}
