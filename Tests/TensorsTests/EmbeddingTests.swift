import XCTest
@testable import Tensors

final class EmbeddingTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    let vocab = 7, dim = 5
    let ids: [Int32] = [2, 0, 6, 2, 2, 5]  // repeated ids accumulate

    func testForwardCopiesRows() {
        let table = randomTensor([vocab, dim], seed: 1)
        let out = nanTensor([ids.count, dim])
        ids.withUnsafeBufferPointer {
            Embedding.forward(out: out.data, table: table.data, ids: $0.baseAddress!, rows: ids.count, dim: dim)
        }
        for (r, id) in ids.enumerated() {
            for i in 0..<dim { XCTAssertEqual(out[r * dim + i], table[Int(id) * dim + i]) }
        }
    }

    func testGradient() {
        let table = randomTensor([vocab, dim], seed: 2), projector = randomTensor([ids.count, dim], seed: 3)
        let out = Tensor(shape: [ids.count, dim])
        ids.withUnsafeBufferPointer { idPointer in
            let dTable = Tensor(shape: [vocab, dim])
            dTable.data.update(repeating: 1, count: dTable.count)  // backward accumulates
            Embedding.backward(dTable: dTable.data, dOut: projector.data, ids: idPointer.baseAddress!,
                               rows: ids.count, dim: dim)
            for i in 0..<dTable.count { dTable[i] -= 1 }
            for i in 0..<dim { XCTAssertEqual(dTable[1 * dim + i], 0) }  // id 1 is unused
            GradientCheck.check("embedding dTable", input: table, analytic: dTable) {
                Embedding.forward(out: out.data, table: table.data, ids: idPointer.baseAddress!, rows: ids.count, dim: dim)
                return projection(out.data, projector.data, count: out.count)
            }
        }
    }

    func testTokenIDValidation() throws {
        let good: [Int32] = [0, 3, 6], ignored: [Int32] = [0, -1, 6], bad: [Int32] = [0, 7], negative: [Int32] = [-2]
        try good.withUnsafeBufferPointer {
            try TokenIDs.validate($0.baseAddress!, count: 3, vocab: vocab, context: "good")
        }
        try ignored.withUnsafeBufferPointer {
            try TokenIDs.validate($0.baseAddress!, count: 3, vocab: vocab, allowIgnored: true, context: "targets")
        }
        XCTAssertThrowsError(try ignored.withUnsafeBufferPointer {
            try TokenIDs.validate($0.baseAddress!, count: 3, vocab: vocab, context: "ids")
        })
        XCTAssertThrowsError(try negative.withUnsafeBufferPointer {
            try TokenIDs.validate($0.baseAddress!, count: 1, vocab: vocab, allowIgnored: true, context: "targets")
        })
        XCTAssertThrowsError(try bad.withUnsafeBufferPointer {
            try TokenIDs.validate($0.baseAddress!, count: 2, vocab: vocab, context: "data.json record 4")
        }) { error in
            let message = (error as? LoRAKitError)?.message ?? ""
            XCTAssertTrue(message.contains("data.json record 4") && message.contains("token id 7"), message)
        }
    }
}
