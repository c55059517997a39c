import Foundation
import XCTest
@testable import Tensors

/// The vectorized exponential, the split matrix products and the matrix-vector path.
final class FastKernelTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    func testExponentialIsAccurateAndUnderflowsToZero() {
        var worst: Double = 0
        var x: Float = -87
        while x < 88 {
            let got = Double(expScalar(x)), want = Foundation.exp(Double(x))
            worst = max(worst, abs(got - want) / want)
            x += 0.0137
        }
        print("expLanes: max relative error \(worst)")
        XCTAssertLessThan(worst, 4e-7)
        XCTAssertEqual(expScalar(0), 1)
        XCTAssertEqual(expScalar(-100), 0)
        XCTAssertEqual(expScalar(-.infinity), 0)
        let lanes = expLanes(Lanes(-3, -2, -1, 0, 1, 2, 3, 4))
        for i in 0..<8 { XCTAssertEqual(lanes[i], expScalar(Float(i) - 3)) }
    }

    /// `exponentiateShifted` (the AVX2 + FMA kernel where the CPU has it) against Double, for row lengths that
    /// leave every tail; `sumExponentials` gives the same sum and leaves x as it was; far below the shift is 0.
    func testShiftedExponentialsOfARow() {
        for count in [1, 7, 8, 9, 255, 256, 257, 1000] {
            let values = (0..<count).map { Float(($0 * 37) % 101) * 0.9 - 60 }
            let x = Tensor(shape: [count], values: values)
            let shift: Float = 20
            let before = sumExponentials(x.data, count: count, shift: shift)
            XCTAssertEqual(x.array, values, "sumExponentials changed x (count \(count))")
            let sum = exponentiateShifted(x.data, count: count, shift: shift)
            XCTAssertEqual(sum, before, "count \(count)")
            var wantSum: Double = 0, worst: Double = 0
            for i in 0..<count {
                let want = Foundation.exp(Double(values[i] - shift))
                wantSum += want
                worst = max(worst, abs(Double(x[i]) - want) / want)
            }
            XCTAssertLessThan(worst, 4e-7, "count \(count)")
            XCTAssertEqual(sum, wantSum, accuracy: wantSum * 1e-6, "count \(count)")
        }
        let far = Tensor(shape: [11], values: [-200, 0, -88, -87, .infinity * -1, 3, -150, 1, 2, -300, 0])
        exponentiateShifted(far.data, count: 11, shift: 0)
        for i in [0, 2, 4, 6, 9] { XCTAssertEqual(far[i], 0, "index \(i)") }
        XCTAssertEqual(far[1], 1)
        XCTAssertGreaterThan(far[3], 0)
    }

    /// The row maximum and scaling of softmax (AVX2 where the CPU has it) for lengths that leave every tail, with
    /// the maximum in the tail, in the vector part, and first.
    func testMaximumAndScaleOfARow() {
        for count in [1, 7, 8, 9, 16, 17, 1000] {
            for peak in Set([0, count / 2, count - 1]) {
                let values = (0..<count).map { $0 == peak ? Float(50) : Float(($0 * 37) % 101) * 0.3 - 20 }
                let x = Tensor(shape: [count], values: values)
                XCTAssertEqual(maximumLanes(x.data, count: count), 50, "count \(count), peak at \(peak)")
                scaleLanes(x.data, count: count, by: 0.25)
                XCTAssertEqual(x.array, values.map { $0 * 0.25 }, "count \(count)")
            }
        }
    }

    /// c = op(a)·op(b) in Double, a is (m, k) or (k, m) when transposed, b is (k, n) or (n, k).
    private func naive(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, _ a: Tensor, _ b: Tensor) -> Tensor {
        let c = Tensor(shape: [m, n])
        for i in 0..<m {
            for j in 0..<n {
                var sum: Double = 0
                for p in 0..<k {
                    let x = transA ? a[p * m + i] : a[i * k + p], y = transB ? b[j * k + p] : b[p * n + j]
                    sum += Double(x) * Double(y)
                }
                c[i * n + j] = Float(sum)
            }
        }
        return c
    }

    /// Products large enough to be split over threads (by rows and by columns), and one-row products.
    func testSplitAndMatrixVectorProductsMatchNaive() {
        let shapes = [(m: 150, n: 97, k: 80), (m: 40, n: 300, k: 100), (m: 1, n: 300, k: 70), (m: 1, n: 3000, k: 400)]
        for (index, s) in shapes.enumerated() {
            for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = randomTensor([s.m * s.k], seed: UInt64(10 + index)), b = randomTensor([s.k * s.n], seed: 20)
                let want = naive(transA: transA, transB: transB, m: s.m, n: s.n, k: s.k, a, b)
                let c = nanTensor([s.m, s.n])
                GEMM.sgemm(transA: transA, transB: transB, m: s.m, n: s.n, k: s.k, a: a.data,
                           lda: transA ? s.m : s.k, b: b.data, ldb: transB ? s.k : s.n, beta: 0, c: c.data, ldc: s.n)
                checkClose("sgemm \(s) tA \(transA) tB \(transB)", c, want, tolerance: 2e-5)
                // beta 1 adds; alpha scales
                GEMM.sgemm(transA: transA, transB: transB, m: s.m, n: s.n, k: s.k, alpha: 0.5, a: a.data,
                           lda: transA ? s.m : s.k, b: b.data, ldb: transB ? s.k : s.n, beta: 1, c: c.data, ldc: s.n)
                for i in 0..<want.count { want[i] *= 1.5 }
                checkClose("sgemm accumulate \(s) tA \(transA) tB \(transB)", c, want, tolerance: 3e-5)
            }
        }
    }

    func testSplitProductsAreDeterministic() {
        let a = randomTensor([300, 200], seed: 1), w = randomTensor([250, 200], seed: 2)
        func run() -> Tensor {
            let out = Tensor(shape: [300, 250])
            GEMM.linear(out: out.data, input: a.data, weight: w.data, rows: 300, inFeatures: 200, outFeatures: 250)
            return out
        }
        XCTAssertTrue(bitwiseEqual(run(), run()))
    }
}
