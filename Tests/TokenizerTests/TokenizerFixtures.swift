import Foundation
import XCTest

/// The committed fixtures of scripts/make_tokenizer_fixtures.py: models trained by Python SentencePiece and
/// what Python SentencePiece does with them.
enum TokenizerFixtures {
    /// Tests/Fixtures/tokenizer, found from this file's path.
    static let directory: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.lastPathComponent != "Tests", url.path != "/" { url.deleteLastPathComponent() }
        return url.appendingPathComponent("Fixtures/tokenizer")
    }()

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    struct Expected: Decodable {
        let sentencepieceVersion: String
        let models: [String: Model]
    }

    struct Model: Decodable {
        let file: String
        let vocabSize: Int
        let bosId: Int32
        let eosId: Int32
        let padId: Int32
        let unkId: Int32
        let cases: [Case]
        let pieces: [Piece]
        let typeCounts: [String: Int]
        let decodeCases: [DecodeCase]
    }

    struct Case: Decodable {
        let text: String
        let ids: [Int32]
        let pieces: [String]
        let decoded: String
    }

    struct Piece: Decodable {
        let id: Int32
        let piece: String
        let score: Float
        let type: String
    }

    struct DecodeCase: Decodable {
        let ids: [Int32]
        let decoded: String
    }

    static func expected() throws -> Expected {
        let data = try Data(contentsOf: directory.appendingPathComponent("expected.json"))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Expected.self, from: data)
    }

    /// A fresh empty directory, removed when the test ends.
    static func temporaryDirectory(_ test: XCTestCase) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("TokenizerTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}
