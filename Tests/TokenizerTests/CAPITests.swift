import CSentencePiece
import Foundation
import XCTest

/// The C API directly: what the Swift class relies on, and the parts it does not use.
final class CAPITests: XCTestCase {
    private func message(_ error: UnsafeMutablePointer<CChar>?) -> String? {
        guard let error else { return nil }
        defer { csp_free_string(error) }
        return String(cString: error)
    }

    private func loadFixture(_ name: String) throws -> OpaquePointer {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: TokenizerFixtures.path(name)))
        var error: UnsafeMutablePointer<CChar>?
        let processor = bytes.withUnsafeBytes { csp_load_serialized($0.baseAddress, $0.count, &error) }
        XCTAssertNil(message(error))
        return try XCTUnwrap(processor)
    }

    func testLoadSerializedAndLookUps() throws {
        let processor = try loadFixture("bpe.model")
        defer { csp_free(processor) }
        XCTAssertEqual(csp_piece_count(processor), 400)
        var length = 0
        let piece = try XCTUnwrap(csp_id_to_piece(processor, 1, &length))
        XCTAssertEqual(String(decoding: UnsafeRawBufferPointer(start: piece, count: length), as: UTF8.self), "<s>")
        XCTAssertNil(csp_id_to_piece(processor, 400, &length))
        XCTAssertEqual(length, 0)
        XCTAssertEqual(csp_type(processor, 1).rawValue, CSP_PIECE_CONTROL.rawValue)
        XCTAssertEqual(csp_type(processor, -1).rawValue, CSP_PIECE_INVALID.rawValue)
        XCTAssertEqual(csp_score(processor, 400), 0)
    }

    func testEmptyAndGarbageBytesAreErrors() {
        var error: UnsafeMutablePointer<CChar>?
        XCTAssertNil(csp_load_serialized(nil, 0, &error))
        XCTAssertEqual(message(error), "the file is empty")
        let garbage: [UInt8] = [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x41]
        XCTAssertNil(garbage.withUnsafeBytes { csp_load_serialized($0.baseAddress, $0.count, &error) })
        XCTAssertEqual(message(error), "malformed or truncated data at byte 0")
    }

    func testDecodeChecksIdsItself() throws {
        let processor = try loadFixture("unigram.model")
        defer { csp_free(processor) }
        var error: UnsafeMutablePointer<CChar>?
        var length = 0
        let ids: [Int32] = [5, 400]
        XCTAssertNil(ids.withUnsafeBufferPointer { csp_decode(processor, $0.baseAddress, $0.count, &length, &error) })
        XCTAssertEqual(message(error), "id 400 at position 1 is outside the vocabulary of 400 pieces")
    }

    func testTrainFromAnArgumentString() throws {
        let directory = try TokenizerFixtures.temporaryDirectory(self)
        let corpus = directory.appendingPathComponent("corpus.txt")
        let lines = (0..<400).map { "line \($0) of the corpus with words like café, naïve and 日本語 \($0 * 7919)" }
        try lines.joined(separator: "\n").write(to: corpus, atomically: true, encoding: .utf8)
        let prefix = directory.appendingPathComponent("m").path
        var error: UnsafeMutablePointer<CChar>?
        let status = csp_train_arguments(
            "--input=\(corpus.path) --model_prefix=\(prefix) --vocab_size=100 --model_type=bpe --minloglevel=2", &error)
        XCTAssertNil(message(error))
        XCTAssertEqual(status, 0)
        let processor = try XCTUnwrap(csp_load(prefix + ".model", &error))
        defer { csp_free(processor) }
        XCTAssertEqual(csp_piece_count(processor), 100)

        XCTAssertEqual(csp_train_arguments("--input=\(corpus.path) --vocab_size=100 --no_such_flag=1", &error), -1)
        XCTAssertNotNil(message(error))
    }
}
