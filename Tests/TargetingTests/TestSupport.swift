import Checkpoints
import Foundation
import MiniGPT
import Tensors
import XCTest

/// Paths to the committed fixtures (Tests/Fixtures), found from this file's location.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
    static func peft(_ name: String) -> String { root.appendingPathComponent("peft/\(name)").path }
}

/// A fresh empty directory under the system's temporary directory, removed when the test ends.
func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let path = NSTemporaryDirectory() + "targeting-tests-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Writes `object` as JSON to `path`.
func writeJSON(_ object: Any, to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
    try data.write(to: URL(fileURLWithPath: path))
}

/// Reads a JSON object file.
func readJSON(_ path: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
}

/// Asserts that `body` throws a `LoRAKitError` whose message contains every one of `fragments`.
func assertError<T>(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                    _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(fragments)", file: file, line: line)
    } catch let error as LoRAKitError {
        for fragment in fragments where !error.message.contains(fragment) {
            XCTFail("error \"\(error.message)\" does not contain \"\(fragment)\"", file: file, line: line)
        }
    } catch {
        XCTFail("expected a LoRAKitError, got \(error)", file: file, line: line)
    }
}

/// Largest |a − b| over `count` values.
func maxAbsDifference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var worst: Float = 0
    for i in 0..<count { worst = max(worst, abs(a[i] - b[i])) }
    return worst
}

/// A tiny LLaMA config for gradient checks (GQA, 2 layers).
func tinyConfig(layers: Int = 2, hidden: Int = 16) -> LlamaConfig {
    LlamaConfig(vocabSize: 23, hiddenSize: hidden, intermediateSize: 24, numHiddenLayers: layers,
                numAttentionHeads: 4, numKeyValueHeads: 2, headDim: hidden / 4, rmsNormEps: 1e-5,
                maxPositionEmbeddings: 32, tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: nil,
                ropeTheta: 10000)
}

/// The dimensions of the committed tiny model `gqa` (2 layers, hidden 32, q 32, kv 16, ffn 48).
func gqaDims() throws -> ModelDimensions {
    ModelDimensions(try LlamaConfig.load(from: Fixtures.model("gqa") + "/config.json"))
}
