import Foundation
import Tokenizer
import XCTest

/// Bad model files and bad ids throw one clear TokenizerError; none crashes the process.
final class BadInputTests: XCTestCase {
    private func loadError(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> String? {
        do {
            _ = try SentencePieceTokenizer(modelPath: path)
            XCTFail("\(path) loaded", file: file, line: line)
            return nil
        } catch let error as TokenizerError {
            XCTAssertFalse(error.message.contains("\n"), "one line: \(error.message)", file: file, line: line)
            return error.message
        } catch {
            XCTFail("not a TokenizerError: \(error)", file: file, line: line)
            return nil
        }
    }

    private func write(_ bytes: [UInt8], named name: String) throws -> String {
        let url = try TokenizerFixtures.temporaryDirectory(self).appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    private func modelBytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: TokenizerFixtures.path(name))))
    }

    private func assertNotAModel(_ path: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let message = loadError(path, file: file, line: line) else { return }
        XCTAssertTrue(message.hasPrefix("\(path): not a SentencePiece model ("), message, file: file, line: line)
        XCTAssertTrue(message.hasSuffix(")"), message, file: file, line: line)
    }

    func testMissingFile() throws {
        let path = try TokenizerFixtures.temporaryDirectory(self).appendingPathComponent("absent.model").path
        XCTAssertEqual(loadError(path), "\(path): no such tokenizer model")
    }

    func testDirectory() throws {
        let path = try TokenizerFixtures.temporaryDirectory(self).path
        XCTAssertEqual(loadError(path), "\(path): not a SentencePiece model (it is a directory)")
    }

    func testEmptyFile() throws {
        assertNotAModel(try write([], named: "empty.model"))
    }

    func testGarbageFiles() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for index in 0..<20 {
            let bytes = (0..<(64 + index * 97)).map { _ -> UInt8 in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: state >> 56)
            }
            assertNotAModel(try write(bytes, named: "garbage\(index).model"))
        }
        assertNotAModel(try write(Array("this is a text file, not a model\n".utf8), named: "text.model"))
        assertNotAModel(try write(Array("{\"model\": \"json\"}".utf8), named: "tokenizer.json"))
    }

    func testTruncatedModels() throws {
        for name in ["unigram.model", "bpe.model", "normalized.model"] {
            let bytes = try modelBytes(name)
            // Cut inside the piece table, inside the trainer spec and one byte short of the end.
            for length in [1, 2, 7, bytes.count / 3, bytes.count / 2, bytes.count - 1] {
                assertNotAModel(try write(Array(bytes.prefix(length)), named: "\(length)-\(name)"))
            }
        }
    }

    /// A model whose normalization trie points outside itself: libsentencepiece would read out of bounds on the
    /// first encode, so the binding's own check must refuse it.
    func testCorruptNormalizationTrie() throws {
        // Precompiled charsmap: [trie size][256 units; the root's offset sends the search to unit 4096][strings].
        var charsMap = withUnsafeBytes(of: UInt32(1024).littleEndian, Array.init)
        var units = [UInt32](repeating: 0, count: 256)
        units[0] = 4096 << 10
        for unit in units { charsMap += withUnsafeBytes(of: unit.littleEndian, Array.init) }
        charsMap += Array("a\0".utf8)
        // normalizer_spec (field 3) { precompiled_charsmap (field 2) }, appended: protobuf merges it in.
        let spec = [0x12] + varint(charsMap.count) + charsMap
        let bytes = try modelBytes("unigram.model") + [0x1A] + varint(spec.count) + spec
        let path = try write(bytes, named: "corrupt-trie.model")
        assertNotAModel(path)
        XCTAssertTrue(loadError(path)?.contains("normalization trie") ?? false)
    }

    /// Single flipped bytes anywhere in a model with a normalization trie: every load either fails cleanly or
    /// gives a tokenizer that encodes and decodes (a crash would end the test run).
    func testFlippedBytesNeverCrash() throws {
        let original = try modelBytes("normalized.model")
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        var refused = 0
        var state: UInt64 = 42
        for index in 0..<300 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            var bytes = original
            bytes[Int(state >> 33) % bytes.count] = UInt8(truncatingIfNeeded: state >> 13)
            let url = directory.appendingPathComponent("flip\(index).model")
            try Data(bytes).write(to: url)
            do {
                let tokenizer = try SentencePieceTokenizer(modelPath: url.path)
                let ids = try tokenizer.encode("Ｈｅｌｌｏ ﬁne ① Å café 日本語 🦙 \t\n ¡¿ÄÖÜ")
                _ = try tokenizer.decode(ids.filter { $0 >= 0 && Int($0) < tokenizer.vocabSize })
            } catch is TokenizerError {
                refused += 1
            }
        }
        XCTAssertGreaterThan(refused, 0)
    }

    func testDecodeRejectsIdsOutsideTheVocabulary() throws {
        let path = TokenizerFixtures.path("unigram.model")
        let tokenizer = try SentencePieceTokenizer(modelPath: path)
        XCTAssertThrowsError(try tokenizer.decode([5, 400, 7])) { error in
            XCTAssertEqual((error as? TokenizerError)?.message,
                           "\(path): cannot decode id 400 at position 1: the vocabulary has 400 pieces, ids 0...399")
        }
        XCTAssertThrowsError(try tokenizer.decode([-1])) { error in
            XCTAssertTrue((error as? TokenizerError)?.message.contains("id -1") ?? false, "\(error)")
        }
        XCTAssertThrowsError(try tokenizer.decode([Int32.max]))
        XCTAssertEqual(try tokenizer.decode([399]), try tokenizer.piece(399))
    }

    func testPieceLookupsRejectIdsOutsideTheVocabulary() throws {
        let tokenizer = try SentencePieceTokenizer(modelPath: TokenizerFixtures.path("bpe.model"))
        for id: Int32 in [-1, 400, 100_000] {
            XCTAssertThrowsError(try tokenizer.piece(id)) { error in
                XCTAssertTrue("\(error)".contains("id \(id) is outside the vocabulary of 400 pieces"), "\(error)")
            }
            XCTAssertThrowsError(try tokenizer.score(id))
            XCTAssertThrowsError(try tokenizer.pieceType(id))
        }
    }

    private func varint(_ value: Int) -> [UInt8] {
        var value = UInt64(value)
        var bytes: [UInt8] = []
        repeat {
            bytes.append(UInt8(value & 0x7F) | (value >= 0x80 ? 0x80 : 0))
            value >>= 7
        } while value > 0
        return bytes
    }
}
