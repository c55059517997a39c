import Foundation
import Tokenizer
import XCTest

/// SentencePieceTokenizer.train: LLaMA-style models that load and round-trip, deterministic, written atomically,
/// and one clear error for each kind of bad input.
final class TrainingTests: XCTestCase {
    /// A corpus of made-up words, accented Latin, a few CJK characters and numbers, one sentence per line.
    private func writeCorpus(in directory: URL, name: String = "corpus.txt", lines: Int = 600) throws -> String {
        let syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "an", "el", "or", "un", "qu", "st", "th"]
        let extras = ["café", "naïve", "Ångström", "über", "日本語", "東京", "の", "テキスト", "the", "and", "llama"]
        var state: UInt64 = 7
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(state >> 33) % bound
        }
        var text = ""
        for _ in 0..<lines {
            var words: [String] = []
            for _ in 0..<(4 + next(8)) {
                switch next(10) {
                case 0..<6: words.append((0..<(1 + next(3))).map { _ in syllables[next(syllables.count)] }.joined())
                case 6..<9: words.append(extras[next(extras.count)])
                default: words.append(String(next(100_000)))
                }
            }
            text += words.joined(separator: " ") + ".\n"
        }
        let path = directory.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private let roundTripTexts = [
        "kalo mine café", "日本語のテキスト", "🦙 not in the corpus 龘", "  leading, trailing  ", "tabs\tand\nnewlines\n",
        "digits 1234567890", "", " ", "<s> is text here </s>",
    ]

    private func checkTrainedModel(_ tokenizer: SentencePieceTokenizer, vocabSize: Int) throws {
        XCTAssertEqual(tokenizer.vocabSize, vocabSize)
        XCTAssertEqual([tokenizer.unkId, tokenizer.bosId, tokenizer.eosId, tokenizer.padId], [0, 1, 2, -1])
        XCTAssertEqual(try [0, 1, 2].map { try tokenizer.piece($0) }, ["<unk>", "<s>", "</s>"])
        XCTAssertEqual(try tokenizer.pieceType(1), .control)
        XCTAssertEqual(try tokenizer.pieceType(XCTUnwrap(tokenizer.pieceId("<0x41>"))), .byte)
        for text in roundTripTexts {
            let ids = try tokenizer.encode(text)
            XCTAssertFalse(ids.contains(tokenizer.unkId), text.debugDescription)
            XCTAssertFalse(ids.contains(tokenizer.bosId), text.debugDescription)
            XCTAssertEqual(try tokenizer.decode(ids), text)
        }
        // split_digits: every digit is its own piece.
        let digits = try tokenizer.encode("1234567890").map { try tokenizer.piece($0).replacingOccurrences(of: "▁", with: "") }
            .filter { !$0.isEmpty }
        XCTAssertEqual(digits, (0...9).map { String(($0 + 1) % 10) })
    }

    func testTrainUnigramModelLoadsAndRoundTrips() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory)
        let out = directory.appendingPathComponent("unigram.model").path
        let tokenizer = try SentencePieceTokenizer.train(inputFiles: [corpus], vocabSize: 360, modelType: .unigram,
                                                         outputPath: out)
        try checkTrainedModel(tokenizer, vocabSize: 360)
        try checkTrainedModel(SentencePieceTokenizer(modelPath: out), vocabSize: 360)
        // Unigram learns whole words of the corpus.
        XCTAssertLessThan(try tokenizer.encode("café").count, 3)
    }

    func testTrainBpeModelFromSeveralFilesLoadsAndRoundTrips() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let first = try writeCorpus(in: directory, name: "first part.txt", lines: 300)
        let second = try writeCorpus(in: directory, name: "second.txt", lines: 300)
        let out = directory.appendingPathComponent("bpe tokenizer.model").path
        let tokenizer = try SentencePieceTokenizer.train(inputFiles: [first, second], vocabSize: 360, modelType: .bpe,
                                                         outputPath: out)
        try checkTrainedModel(tokenizer, vocabSize: 360)
        // BPE scores are minus the merge rank.
        XCTAssertGreaterThan(try tokenizer.score(259 + 3), try tokenizer.score(359))
    }

    func testTrainingIsDeterministicAndWritesOnlyTheModel() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory)
        let outputs = directory.appendingPathComponent("models", isDirectory: true)
        try FileManager.default.createDirectory(at: outputs, withIntermediateDirectories: false)
        let first = outputs.appendingPathComponent("a.model")
        let second = outputs.appendingPathComponent("b.model")
        for modelType in SentencePieceTokenizer.ModelType.allCases {
            try SentencePieceTokenizer.train(inputFiles: [corpus], vocabSize: 360, modelType: modelType, outputPath: first.path)
            try SentencePieceTokenizer.train(inputFiles: [corpus], vocabSize: 360, modelType: modelType, outputPath: second.path)
            XCTAssertEqual(try Data(contentsOf: first), try Data(contentsOf: second), modelType.rawValue)
        }
        // No .vocab file, no temporary file left behind; the second run replaced a.model in place.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outputs.path).sorted(), ["a.model", "b.model"])
    }

    func testUserDefinedSymbolsStayWhole() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory)
        let tokenizer = try SentencePieceTokenizer.train(
            inputFiles: [corpus], vocabSize: 360, outputPath: directory.appendingPathComponent("m.model").path,
            userDefinedSymbols: ["<sep>"])
        let separator = try XCTUnwrap(tokenizer.pieceId("<sep>"))
        XCTAssertEqual(try tokenizer.pieceType(separator), .userDefined)
        XCTAssertTrue(try tokenizer.encode("kalo<sep>mine").contains(separator))
    }

    /// The trainer's progress log is silenced and nothing goes to stdout, which the CLI reserves for results.
    func testTrainingPrintsNothing() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory)
        let captured = directory.appendingPathComponent("captured.txt")
        XCTAssertTrue(FileManager.default.createFile(atPath: captured.path, contents: nil))
        let capture = try FileHandle(forWritingTo: captured)
        fflush(stdout)
        fflush(stderr)
        let savedOut = dup(STDOUT_FILENO), savedErr = dup(STDERR_FILENO)
        dup2(capture.fileDescriptor, STDOUT_FILENO)
        dup2(capture.fileDescriptor, STDERR_FILENO)
        let result = Result {
            try SentencePieceTokenizer.train(inputFiles: [corpus], vocabSize: 360, modelType: .bpe,
                                             outputPath: directory.appendingPathComponent("quiet.model").path)
        }
        fflush(stdout)
        fflush(stderr)
        dup2(savedOut, STDOUT_FILENO)
        dup2(savedErr, STDERR_FILENO)
        close(savedOut)
        close(savedErr)
        try capture.close()
        _ = try result.get()
        XCTAssertEqual(try String(contentsOf: captured, encoding: .utf8), "")
    }

    // MARK: errors

    private func trainError(_ inputs: [String], vocabSize: Int = 360, modelType: SentencePieceTokenizer.ModelType = .unigram,
                            out: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            try SentencePieceTokenizer.train(inputFiles: inputs, vocabSize: vocabSize, modelType: modelType, outputPath: out)
            XCTFail("training succeeded", file: file, line: line)
        } catch let error as TokenizerError {
            XCTAssertFalse(error.message.contains("\n"), error.message, file: file, line: line)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a failed run wrote \(out)", file: file, line: line)
            return error.message
        } catch {
            XCTFail("not a TokenizerError: \(error)", file: file, line: line)
        }
        return ""
    }

    func testNoInputFiles() throws {
        let out = try TokenizerFixtures.temporaryDirectory(self).appendingPathComponent("m.model").path
        XCTAssertEqual(trainError([], out: out), "no input files to train the tokenizer on")
    }

    func testMissingInputFile() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let missing = directory.appendingPathComponent("missing.txt").path
        let corpus = try writeCorpus(in: directory)
        XCTAssertEqual(trainError([corpus, missing], out: directory.appendingPathComponent("m.model").path),
                       "\(missing): no such training file")
    }

    func testEmptyInputFiles() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let empty = directory.appendingPathComponent("empty.txt").path
        let blank = directory.appendingPathComponent("blank.txt").path
        try "".write(toFile: empty, atomically: true, encoding: .utf8)
        try "\n\n\n".write(toFile: blank, atomically: true, encoding: .utf8)
        for modelType in SentencePieceTokenizer.ModelType.allCases {
            XCTAssertEqual(trainError([empty, blank], modelType: modelType, out: directory.appendingPathComponent("m.model").path),
                           "\(empty), \(blank): no training text (the files are empty, or hold only blank lines or "
                               + "lines longer than 4192 bytes, which the trainer skips)")
        }
    }

    func testDirectoryAndCommaPathsAsInput() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let out = directory.appendingPathComponent("m.model").path
        XCTAssertEqual(trainError([directory.path], out: out), "\(directory.path): is a directory, not a training text file")
        let comma = try writeCorpus(in: directory, name: "a,b.txt", lines: 10)
        XCTAssertTrue(trainError([comma], out: out).hasPrefix("\(comma): a training file's path may not contain a comma"))
    }

    func testVocabSizeTooSmall() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory)
        let out = directory.appendingPathComponent("m.model").path
        for modelType in SentencePieceTokenizer.ModelType.allCases {
            // 256 byte pieces + 3 special pieces + the corpus's distinct characters do not fit in 100.
            let message = trainError([corpus], vocabSize: 100, modelType: modelType, out: out)
            XCTAssertTrue(message.hasPrefix("\(corpus): vocab size 100 is too small for this text: it needs at least "), message)
            let needed = message.components(separatedBy: "at least ").last.flatMap { Int($0.prefix { $0.isNumber }) } ?? 0
            XCTAssertGreaterThan(needed, 259, message)
        }
        XCTAssertEqual(trainError([corpus], vocabSize: 0, out: out), "vocab size must be positive, not 0")
    }

    func testVocabSizeTooLarge() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory, lines: 50)
        let out = directory.appendingPathComponent("m.model").path
        for modelType in SentencePieceTokenizer.ModelType.allCases {
            let message = trainError([corpus], vocabSize: 20_000, modelType: modelType, out: out)
            XCTAssertTrue(message.hasPrefix("\(corpus): vocab size 20000 is too large for this text: it yields at most "), message)
        }
    }

    func testUnwritableOutputKeepsNothing() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory)
        let out = directory.appendingPathComponent("no such dir/m.model").path
        let message = trainError([corpus], out: out)
        XCTAssertTrue(message.hasPrefix("\(out): cannot write the tokenizer model ("), message)
    }

    func testFailedTrainingLeavesAnExistingModelAlone() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = try writeCorpus(in: directory)
        let out = directory.appendingPathComponent("m.model").path
        try SentencePieceTokenizer.train(inputFiles: [corpus], vocabSize: 360, outputPath: out)
        let before = try Data(contentsOf: URL(fileURLWithPath: out))
        XCTAssertThrowsError(try SentencePieceTokenizer.train(inputFiles: [corpus], vocabSize: 100, outputPath: out))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), before)
    }
}
