import CKernels
import XCTest
@testable import Tensors

final class GEMMTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    let rows = 13, inFeatures = 17, outFeatures = 9

    /// c[i, j] = Σ_p a[i, p] · b[p, j] in Double; a is (m, k) read through `aAt`, b is (k, n) through `bAt`.
    private func naive(m: Int, n: Int, k: Int, _ aAt: (Int, Int) -> Float, _ bAt: (Int, Int) -> Float) -> Tensor {
        let c = Tensor(shape: [m, n])
        for i in 0..<m {
            for j in 0..<n {
                var sum: Double = 0
                for p in 0..<k { sum += Double(aAt(i, p)) * Double(bAt(p, j)) }
                c[i * n + j] = Float(sum)
            }
        }
        return c
    }

    func testLinear() {
        let x = randomTensor([rows, inFeatures], seed: 1), w = randomTensor([outFeatures, inFeatures], seed: 2)
        let want = naive(m: rows, n: outFeatures, k: inFeatures, { x[$0 * self.inFeatures + $1] },
                         { w[$1 * self.inFeatures + $0] })
        let out = nanTensor([rows, outFeatures])
        GEMM.linear(out: out.data, input: x.data, weight: w.data, rows: rows, inFeatures: inFeatures,
                    outFeatures: outFeatures)
        checkClose("linear", out, want, tolerance: 1e-5)
        GEMM.linear(out: out.data, input: x.data, weight: w.data, rows: rows, inFeatures: inFeatures,
                    outFeatures: outFeatures, accumulate: true)
        for i in 0..<want.count { want[i] *= 2 }
        checkClose("linear, accumulate", out, want, tolerance: 2e-5)
    }

    func testLinearBackwardInput() {
        let dy = randomTensor([rows, outFeatures], seed: 3), w = randomTensor([outFeatures, inFeatures], seed: 4)
        let want = naive(m: rows, n: inFeatures, k: outFeatures, { dy[$0 * self.outFeatures + $1] },
                         { w[$0 * self.inFeatures + $1] })
        let dx = nanTensor([rows, inFeatures])
        GEMM.linearBackwardInput(dInput: dx.data, dOut: dy.data, weight: w.data, rows: rows,
                                 inFeatures: inFeatures, outFeatures: outFeatures, accumulate: false)
        checkClose("linearBackwardInput", dx, want, tolerance: 1e-5)
        GEMM.linearBackwardInput(dInput: dx.data, dOut: dy.data, weight: w.data, rows: rows,
                                 inFeatures: inFeatures, outFeatures: outFeatures)
        for i in 0..<want.count { want[i] *= 2 }
        checkClose("linearBackwardInput, accumulate", dx, want, tolerance: 2e-5)
    }

    func testLinearBackwardWeight() {
        let dy = randomTensor([rows, outFeatures], seed: 5), x = randomTensor([rows, inFeatures], seed: 6)
        let want = naive(m: outFeatures, n: inFeatures, k: rows, { dy[$1 * self.outFeatures + $0] },
                         { x[$0 * self.inFeatures + $1] })
        let dw = nanTensor([outFeatures, inFeatures])
        GEMM.linearBackwardWeight(dWeight: dw.data, dOut: dy.data, input: x.data, rows: rows,
                                  inFeatures: inFeatures, outFeatures: outFeatures, accumulate: false)
        checkClose("linearBackwardWeight", dw, want, tolerance: 1e-5)
        GEMM.linearBackwardWeight(dWeight: dw.data, dOut: dy.data, input: x.data, rows: rows,
                                  inFeatures: inFeatures, outFeatures: outFeatures)
        for i in 0..<want.count { want[i] *= 2 }
        checkClose("linearBackwardWeight, accumulate", dw, want, tolerance: 2e-5)
    }

    /// One input row (generation): the AVX2 kernel where the CPU has it, OpenBLAS's sgemv otherwise. Sizes cover
    /// every tail of the kernel (rows not a multiple of 4, in not a multiple of 8 or 16) and a product large
    /// enough to be split over threads.
    func testLinearOneRow() {
        for (inF, outF) in [(1, 1), (7, 5), (8, 4), (16, 3), (24, 9), (45, 13), (768, 2051)] {
            let x = randomTensor([1, inF], seed: UInt64(inF)), w = randomTensor([outF, inF], seed: UInt64(outF))
            let want = naive(m: 1, n: outF, k: inF, { x[$0 * inF + $1] }, { w[$1 * inF + $0] })
            let out = nanTensor([1, outF])
            GEMM.linear(out: out.data, input: x.data, weight: w.data, rows: 1, inFeatures: inF, outFeatures: outF)
            let tolerance = 1e-5 * Float(max(1, inF / 16))
            checkClose("one row \(inF) -> \(outF)", out, want, tolerance: tolerance)
            GEMM.linear(out: out.data, input: x.data, weight: w.data, rows: 1, inFeatures: inF, outFeatures: outF,
                        accumulate: true)
            for i in 0..<want.count { want[i] *= 2 }
            checkClose("one row \(inF) -> \(outF), accumulate", out, want, tolerance: 2 * tolerance)
        }
    }

    /// Each output of the one-row kernel sums in an order fixed by the input length alone: computing the rows in
    /// one call, one at a time, or split over threads gives the same bits.
    func testOneRowKernelDoesNotDependOnTheSplit() throws {
        try XCTSkipUnless(lk_has_avx2_fma() == 1, "no AVX2 + FMA on this CPU: OpenBLAS's sgemv runs instead")
        let inF = 100, outF = 37
        let x = randomTensor([inF], seed: 7), w = randomTensor([outF, inF], seed: 8)
        let whole = Tensor(shape: [outF]), single = Tensor(shape: [outF])
        XCTAssertEqual(lk_sgemv_rows(whole.data, w.data, inF, x.data, outF, inF, 1, 0), 1)
        for r in 0..<outF {
            XCTAssertEqual(lk_sgemv_rows(single.data + r, w.data + r * inF, inF, x.data, 1, inF, 1, 0), 1)
        }
        XCTAssertEqual(whole.array, single.array)
        // alpha and beta: y = 0.5 · W x + 2 · y
        let y = Tensor(shape: [outF], values: (0..<outF).map { Float($0) })
        XCTAssertEqual(lk_sgemv_rows(y.data, w.data, inF, x.data, outF, inF, 0.5, 2), 1)
        for r in 0..<outF { XCTAssertEqual(y[r], 0.5 * whole[r] + 2 * Float(r), accuracy: 1e-5) }
        // beta 0 ignores what y held, NaN included
        let stale = nanTensor([outF])
        XCTAssertEqual(lk_sgemv_rows(stale.data, w.data, inF, x.data, outF, inF, 1, 0), 1)
        XCTAssertEqual(stale.array, whole.array)
    }

    /// Several weights sharing one input row, split over threads together, give the bits of separate products
    /// (large enough to be split: 3 × 300 rows × 512 inputs).
    func testLinearOneRowOfSeveralWeightsMatchesSeparateProducts() {
        let inF = 512, sizes = [300, 77, 523]
        let x = randomTensor([1, inF], seed: 11)
        let weights = sizes.enumerated().map { randomTensor([$0.element, inF], seed: UInt64(20 + $0.offset)) }
        let separate = sizes.map { Tensor(shape: [$0]) }
        for i in 0..<3 {
            GEMM.linear(out: separate[i].data, input: x.data, weight: weights[i].data, rows: 1, inFeatures: inF,
                        outFeatures: sizes[i])
        }
        let fused = sizes.map { nanTensor([$0]) }
        let products = (0..<3).map { GEMM.OneRowProduct(out: fused[$0].data, weight: weights[$0].data, rows: sizes[$0]) }
        GEMM.linearOneRow(input: x.data, inFeatures: inF, products[0], products[1], products[2])
        for i in 0..<3 { XCTAssertEqual(fused[i].array, separate[i].array, "product \(i)") }
        // two products, the second accumulating
        let before = fused[1].array
        GEMM.linearOneRow(input: x.data, inFeatures: inF, products[0],
                          GEMM.OneRowProduct(out: fused[1].data, weight: weights[1].data, rows: sizes[1], accumulate: true))
        XCTAssertEqual(fused[0].array, separate[0].array)
        for r in 0..<sizes[1] { XCTAssertEqual(fused[1][r], 2 * before[r], accuracy: 1e-5 * max(1, abs(before[r]))) }
    }
}
