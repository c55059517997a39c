import Checkpoints
import MiniGPT
import Tensors
import XCTest

/// `LlamaWeights.load(inMemory: true)` (generation): the same values as the memory-mapped load, in memory the
/// model owns.
final class InMemoryLoadTests: XCTestCase {
    func testInMemoryLoadHoldsTheSameWeights() throws {
        for name in ["gqa", "tied", "f16", "sharded-bf16"] {
            let mapped = try LlamaWeights.load(directory: Fixtures.model(name))
            let copied = try LlamaWeights.load(directory: Fixtures.model(name), inMemory: true)
            let want = mapped.named, got = copied.named
            XCTAssertEqual(got.map(\.0), want.map(\.0), name)
            for ((tensorName, g), (_, w)) in zip(got, want) {
                XCTAssertTrue(g.ownsMemory, "\(name): \(tensorName) still borrows the memory map")
                XCTAssertEqual(g.shape, w.shape, "\(name): \(tensorName)")
                XCTAssertEqual(g.array, w.array, "\(name): \(tensorName)")
            }
            XCTAssertEqual(copied.dims.tiedEmbeddings, copied.lmHead === copied.embedding, name)
        }
    }

    /// The F32 load borrows from the map by default (what training and evaluation use).
    func testDefaultLoadBorrowsTheMap() throws {
        let mapped = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        XCTAssertFalse(mapped.embedding.ownsMemory)
    }

    func testInMemoryLoadWithNF4KeepsTheRestInOwnMemory() throws {
        let copied = try LlamaWeights.load(directory: Fixtures.model("gqa"), quantization: .nf4(doubleQuant: true),
                                           inMemory: true)
        XCTAssertTrue(copied.isQuantized)
        XCTAssertTrue(copied.embedding.ownsMemory)
        XCTAssertTrue(copied.layers[0].attentionNorm.ownsMemory)
        let mapped = try LlamaWeights.load(directory: Fixtures.model("gqa"), quantization: .nf4(doubleQuant: true))
        let tokens: [Int32] = [1, 17, 42, 99, 5]
        let want = try LlamaModel(weights: mapped).logits(TokenBatch(sequences: [tokens]))
        let got = try LlamaModel(weights: copied).logits(TokenBatch(sequences: [tokens]))
        XCTAssertEqual(got.array, want.array)
    }
}
