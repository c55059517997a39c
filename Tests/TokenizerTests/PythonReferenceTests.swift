import Tokenizer
import XCTest

/// The Swift binding against Python SentencePiece on the same model files (Tests/Fixtures/tokenizer).
final class PythonReferenceTests: XCTestCase {
    private func forEachModel(_ body: (String, TokenizerFixtures.Model, SentencePieceTokenizer) throws -> Void) throws {
        let expected = try TokenizerFixtures.expected()
        XCTAssertEqual(Set(expected.models.keys), ["unigram", "bpe", "normalized"])
        for name in expected.models.keys.sorted() {
            let model = expected.models[name]!
            let tokenizer = try SentencePieceTokenizer(modelPath: TokenizerFixtures.path(model.file))
            try body(name, model, tokenizer)
        }
    }

    func testSpecialIdsAndVocabSizeMatchPython() throws {
        try forEachModel { name, model, tokenizer in
            XCTAssertEqual(tokenizer.vocabSize, model.vocabSize, name)
            XCTAssertEqual(tokenizer.bosId, model.bosId, name)
            XCTAssertEqual(tokenizer.eosId, model.eosId, name)
            XCTAssertEqual(tokenizer.padId, model.padId, name)
            XCTAssertEqual(tokenizer.unkId, model.unkId, name)
        }
        // The LLaMA layout the fixtures are trained with.
        let llamaStyle = try SentencePieceTokenizer(modelPath: TokenizerFixtures.path("unigram.model"))
        XCTAssertEqual([llamaStyle.unkId, llamaStyle.bosId, llamaStyle.eosId, llamaStyle.padId], [0, 1, 2, -1])
    }

    func testModelTypeIsReadFromTheTrainerSpec() throws {
        XCTAssertEqual(try SentencePieceTokenizer(modelPath: TokenizerFixtures.path("unigram.model")).modelType, .unigram)
        XCTAssertEqual(try SentencePieceTokenizer(modelPath: TokenizerFixtures.path("bpe.model")).modelType, .bpe)
    }

    func testEncodeGivesPythonIdsExactly() throws {
        try forEachModel { name, model, tokenizer in
            for testCase in model.cases {
                XCTAssertEqual(try tokenizer.encode(testCase.text), testCase.ids, "\(name): \(testCase.text.debugDescription)")
            }
        }
    }

    func testPiecesOfEncodedIdsMatchPython() throws {
        try forEachModel { name, model, tokenizer in
            for testCase in model.cases {
                let pieces = try tokenizer.encode(testCase.text).map { try tokenizer.piece($0) }
                XCTAssertEqual(pieces, testCase.pieces, "\(name): \(testCase.text.debugDescription)")
            }
        }
    }

    func testDecodeMatchesPython() throws {
        try forEachModel { name, model, tokenizer in
            for testCase in model.cases {
                XCTAssertEqual(try tokenizer.decode(testCase.ids), testCase.decoded, "\(name): \(testCase.text.debugDescription)")
                XCTAssertEqual(try tokenizer.decode(tokenizer.encode(testCase.text)), testCase.decoded,
                               "\(name): \(testCase.text.debugDescription)")
            }
            for decodeCase in model.decodeCases {
                XCTAssertEqual(try tokenizer.decode(decodeCase.ids), decodeCase.decoded, "\(name): \(decodeCase.ids)")
            }
        }
    }

    /// With identity normalization and byte fallback, every text survives encode then decode unchanged:
    /// odd whitespace, characters never seen in training, NUL bytes.
    func testIdentityModelsRoundTripExactly() throws {
        try forEachModel { name, model, tokenizer in
            guard name != "normalized" else { return }
            for testCase in model.cases {
                XCTAssertEqual(try tokenizer.decode(tokenizer.encode(testCase.text)), testCase.text,
                               "\(name): \(testCase.text.debugDescription)")
            }
        }
    }

    func testPiecesScoresAndTypesMatchPython() throws {
        try forEachModel { name, model, tokenizer in
            for piece in model.pieces {
                XCTAssertEqual(try tokenizer.piece(piece.id), piece.piece, "\(name) id \(piece.id)")
                XCTAssertEqual(try tokenizer.score(piece.id), piece.score, "\(name) id \(piece.id)")
                XCTAssertEqual(try tokenizer.pieceType(piece.id).rawValue, piece.type, "\(name) id \(piece.id)")
                XCTAssertEqual(tokenizer.pieceId(piece.piece), piece.id, "\(name) piece \(piece.piece)")
            }
        }
    }

    /// Every id's type, read by the binding's own model reader, agrees with the counts Python read from the file.
    func testPieceTypeCountsMatchTheModelFile() throws {
        try forEachModel { name, model, tokenizer in
            var counts: [String: Int] = [:]
            for id in 0..<Int32(tokenizer.vocabSize) { counts[try tokenizer.pieceType(id).rawValue, default: 0] += 1 }
            XCTAssertEqual(counts, model.typeCounts, name)
        }
    }

    func testByteFallbackUsesBytePieces() throws {
        let tokenizer = try SentencePieceTokenizer(modelPath: TokenizerFixtures.path("bpe.model"))
        let byteA = try XCTUnwrap(tokenizer.pieceId("<0x41>"))
        XCTAssertEqual(try tokenizer.pieceType(byteA), .byte)
        XCTAssertEqual(try tokenizer.pieceType(tokenizer.unkId), .unknown)
        XCTAssertEqual(try tokenizer.pieceType(tokenizer.bosId), .control)
        XCTAssertEqual(try tokenizer.pieceType(XCTUnwrap(tokenizer.pieceId("<sep>"))), .userDefined)
        // The llama emoji is not in the training text: its four UTF-8 bytes become four byte pieces.
        let pieces = try tokenizer.encode("🦙").map { try tokenizer.piece($0) }
        XCTAssertEqual(Array(pieces.suffix(4)), ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"])
        XCTAssertFalse(try tokenizer.encode("🦙 and 龘").contains(tokenizer.unkId))
        XCTAssertNil(tokenizer.pieceId("no such piece"))
        XCTAssertEqual(tokenizer.pieceId("<unk>"), tokenizer.unkId)
    }

    func testEncodeAddsNoBosOrEos() throws {
        try forEachModel { name, _, tokenizer in
            let ids = try tokenizer.encode("Hello world")
            XCTAssertFalse(ids.isEmpty, name)
            XCTAssertFalse(ids.contains(tokenizer.bosId), name)
            XCTAssertFalse(ids.contains(tokenizer.eosId), name)
            XCTAssertEqual(try tokenizer.encode(""), [], name)
        }
    }

    func testEncodingFromSeveralThreadsAgrees() throws {
        let tokenizer = try SentencePieceTokenizer(modelPath: TokenizerFixtures.path("unigram.model"))
        let text = "The quick brown fox jumps over the lazy dog. café 日本語 🦙 12345"
        let reference = try tokenizer.encode(text)
        let results = UnsafeMutableBufferPointer<Bool>.allocate(capacity: 8)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 8) { index in
            results[index] = (0..<200).allSatisfy { _ in (try? tokenizer.encode(text)) == reference }
        }
        XCTAssertTrue(results.allSatisfy { $0 })
    }
}
