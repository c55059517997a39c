import Foundation
import XCTest
import MiniGPT
import Tensors
@testable import InstructionTuning

final class DataBatcherTests: DataTestCase {
    /// Ten examples told apart by their second id; lengths 3...7, prompt lengths 1...2.
    let examples = (0..<10).map { k in
        EncodedExample(ids: [1, Int32(100 + k)] + [Int32](repeating: 7, count: k % 5) + [2], promptLength: 1 + k % 2)
    }

    func batches(_ batcher: Batcher, epoch: Int) -> [TokenBatch] {
        (0..<batcher.batchesPerEpoch).map { batcher.batch(epoch: epoch, index: $0) }
    }

    /// The example numbers of a batch, read back from the ids.
    func numbers(_ batch: TokenBatch) -> [Int] {
        (0..<batch.batch).map { Int(batch.ids[batch.starts[$0] + 1]) - 100 }
    }

    func testEveryExampleOncePerEpochLastPartialBatchKept() throws {
        let batcher = try Batcher(examples: examples, batchSize: 3, seed: 5)
        XCTAssertEqual(batcher.batchesPerEpoch, 4)
        for epoch in 0..<4 {
            let all = batches(batcher, epoch: epoch)
            XCTAssertEqual(all.map(\.batch), [3, 3, 3, 1])
            XCTAssertEqual(all.flatMap(numbers).sorted(), Array(0..<10), "epoch \(epoch)")
            XCTAssertEqual(all.flatMap(numbers), batcher.order(epoch: epoch))
            for batch in all {
                let members = numbers(batch).map { examples[$0] }
                let expected = Batcher.makeTokenBatch(members, maskPrompt: true)
                XCTAssertEqual(batch.ids, expected.ids)
                XCTAssertEqual(batch.targets, expected.targets)
                XCTAssertEqual(batch.lengths, members.map { Int32($0.ids.count) })
            }
        }
        XCTAssertEqual(try Batcher(examples: examples, batchSize: 10, seed: 0).batchesPerEpoch, 1)
        XCTAssertEqual(try Batcher(examples: examples, batchSize: 64, seed: 0).batchesPerEpoch, 1)
        XCTAssertEqual(try Batcher(examples: examples, batchSize: 1, seed: 0).batchesPerEpoch, 10)
    }

    func testShuffleIsDeterministicPerSeedAndEpoch() throws {
        let first = try Batcher(examples: examples, batchSize: 4, seed: 1234)
        let again = try Batcher(examples: examples, batchSize: 4, seed: 1234)
        // Asking in a different epoch order gives the same batches: an epoch depends only on (seed, epoch).
        for epoch in [2, 0, 1, 0, 7] {
            XCTAssertEqual(batches(first, epoch: epoch).map(\.ids), batches(again, epoch: epoch).map(\.ids))
        }
        let orders = (0..<4).map { first.order(epoch: $0) }
        XCTAssertEqual(Set(orders).count, 4, "each epoch has its own order: \(orders)")
        XCTAssertNotEqual(orders[0], Array(0..<10), "the first epoch is shuffled too")
        let otherSeed = try Batcher(examples: examples, batchSize: 4, seed: 1235)
        XCTAssertNotEqual(otherSeed.order(epoch: 0), orders[0])
        // A copy shares nothing that changes its answers.
        let copy = first
        XCTAssertEqual(copy.order(epoch: 3), orders[3])
        XCTAssertEqual(first.order(epoch: 0), orders[0])
    }

    func testShuffleIsUniformEnough() throws {
        // Over many seeds each example lands in each slot about equally often (10 slots, 2000 seeds: ~200 each).
        var counts = [[Int]](repeating: [Int](repeating: 0, count: 10), count: 10)
        for seed in 0..<2000 {
            for (slot, example) in Batcher.permutation(count: 10, seed: UInt64(seed), epoch: 0).enumerated() {
                counts[example][slot] += 1
            }
        }
        for row in counts { for count in row { XCTAssert((140...260).contains(count), "\(counts)") } }
    }

    func testBatcherErrors() throws {
        assertError(try Batcher(examples: [], batchSize: 2, seed: 0), contains: ["no training examples"])
        assertError(try Batcher(examples: examples, batchSize: 0, seed: 0), contains: ["--batch-size must be at least 1, not 0"])
    }

    func testSplit() throws {
        let records = (0..<20).map { InstructionRecord(instruction: "i\($0)", output: "o\($0)") }
        let (train, val) = try Batcher.split(records, valFraction: 0.25, seed: 3)
        XCTAssertEqual(val.count, 5)
        XCTAssertEqual(train.count, 15)
        XCTAssertEqual(Set(train).union(val), Set(records))
        XCTAssertTrue(Set(train).isDisjoint(with: val))
        // File order is kept within each part.
        XCTAssertEqual(train, records.filter { train.contains($0) })
        XCTAssertEqual(val, records.filter { val.contains($0) })
        // Seeded: same seed, same split; another seed, another split.
        XCTAssertEqual(try Batcher.split(records, valFraction: 0.25, seed: 3).val, val)
        XCTAssertNotEqual(try Batcher.split(records, valFraction: 0.25, seed: 4).val, val)
        XCTAssertNotEqual(val, Array(records.prefix(5)))

        XCTAssertEqual(try Batcher.split(records, valFraction: 0, seed: 3).val, [])
        XCTAssertEqual(try Batcher.split(records, valFraction: 0, seed: 3).train, records)
        XCTAssertEqual(try Batcher.split(records, valFraction: 0.001, seed: 3).val.count, 1, "at least one")
        XCTAssertEqual(try Batcher.split(Array(records.prefix(2)), valFraction: 0.99, seed: 3).train.count, 1, "never all")
        XCTAssertEqual(try Batcher.split(Array(records.prefix(1)), valFraction: 0.5, seed: 3).val, [])
        for bad in [1.0, -0.1, 1.5, Double.nan] {
            assertError(try Batcher.split(records, valFraction: bad, seed: 0), contains: ["--val-fraction must be in [0, 1)"])
        }
    }
}
