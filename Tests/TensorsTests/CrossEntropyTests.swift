import Foundation
import XCTest
@testable import Tensors

final class CrossEntropyTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    let rows = 6, vocab = 11
    let targets: [Int32] = [3, -1, 0, 10, -1, 7]

    /// Σ over rows with a target of log Σ_j exp(x_j) − x_target, in Double.
    private func logSumExpLoss(_ logits: Tensor, targets: [Int32], vocab: Int) -> Double {
        var total: Double = 0
        for (r, target) in targets.enumerated() where target >= 0 {
            let row = (0..<vocab).map { Double(logits[r * vocab + $0]) }
            let m = row.max()!
            total += m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[Int(target)]
        }
        return total
    }

    func testLossMatchesLogSumExpAndLeavesLogitsWithoutGradient() {
        // large logits: the stable form must not overflow
        let logits = randomTensor([rows, vocab], seed: 1, scale: 40)
        let before = logits.clone()
        let loss = targets.withUnsafeBufferPointer {
            CrossEntropy.forwardBackward(logits: logits.data, targets: $0.baseAddress!, rows: rows, vocab: vocab,
                                         gradScale: 1, computeGradient: false)
        }
        let want = logSumExpLoss(before, targets: targets, vocab: vocab)
        print("cross-entropy loss \(loss), log-sum-exp \(want)")
        XCTAssertEqual(loss, want, accuracy: 1e-5 * max(1, abs(want)))
        XCTAssertTrue(bitwiseEqual(logits, before), "computeGradient: false must leave logits untouched")
    }

    func testGradient() {
        let logits = randomTensor([rows, vocab], seed: 2, scale: 3)
        let gradScale: Float = 0.25
        let gradient = logits.clone()
        let loss = targets.withUnsafeBufferPointer {
            CrossEntropy.forwardBackward(logits: gradient.data, targets: $0.baseAddress!, rows: rows, vocab: vocab,
                                         gradScale: gradScale, computeGradient: true)
        }
        XCTAssertEqual(loss, logSumExpLoss(logits, targets: targets, vocab: vocab), accuracy: 1e-5)
        // rows without a target get zero gradient
        for (r, target) in targets.enumerated() where target < 0 {
            for j in 0..<vocab { XCTAssertEqual(gradient[r * vocab + j], 0) }
        }
        // the gradient is gradScale · d(sum loss)/dlogits
        for i in 0..<gradient.count { gradient[i] /= gradScale }
        GradientCheck.check("cross-entropy dLogits", input: logits, analytic: gradient, eps: 1e-2) {
            targets.withUnsafeBufferPointer {
                CrossEntropy.forwardBackward(logits: logits.data, targets: $0.baseAddress!, rows: rows, vocab: vocab,
                                             gradScale: 1, computeGradient: false)
            }
        }
    }

    func testLossDoesNotDependOnThreadCount() {
        let rows = 301, vocab = 1_000
        var rng = RandomGenerator(seed: 3)
        let targets = (0..<rows).map { _ in Int32(rng.next() % UInt64(vocab + 1)) - 1 }
        let logits = randomTensor([rows, vocab], seed: 4, scale: 5)
        func run(threads: Int) -> (Double, Tensor) {
            withThreads(threads) {
                let gradient = logits.clone()
                let loss = targets.withUnsafeBufferPointer {
                    CrossEntropy.forwardBackward(logits: gradient.data, targets: $0.baseAddress!, rows: rows,
                                                 vocab: vocab, gradScale: 1, computeGradient: true)
                }
                return (loss, gradient)
            }
        }
        let (loss1, gradient1) = run(threads: 1), (loss2, gradient2) = run(threads: 2)
        XCTAssertEqual(loss1.bitPattern, loss2.bitPattern)
        XCTAssertTrue(bitwiseEqual(gradient1, gradient2))
        XCTAssertEqual(loss1, logSumExpLoss(logits, targets: targets, vocab: vocab), accuracy: 1e-6 * loss1)
    }

    func testSoftmaxInPlace() {
        let x = randomTensor([9], seed: 5, scale: 50)
        let want = x.array.map(Double.init)
        let m = want.max()!, sum = want.map { exp($0 - m) }.reduce(0, +)
        Softmax.inPlace(x.data, count: x.count)
        for i in 0..<9 { XCTAssertEqual(Double(x[i]), exp(want[i] - m) / sum, accuracy: 1e-6) }
        XCTAssertEqual(x.array.reduce(0, +), 1, accuracy: 1e-5)
    }
}
