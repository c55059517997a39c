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

    // MARK: LoRAKit's blocked kernel (lk_sgemm)

    /// op(A)·op(B) against the Double reference for every transpose combination, with sizes that leave edges in
    /// every direction (rows not a multiple of the 6-row tile, columns not of 16, K in several uneven blocks of at
    /// most 320 and in one), leading dimensions wider than the matrices, alpha ≠ 1, and beta 0 (C full of NaN:
    /// never read), 1 and −0.5.
    func testOwnKernelMatchesTheReference() throws {
        try XCTSkipUnless(lk_has_avx2_fma() == 1, "no AVX2 + FMA on this CPU: OpenBLAS runs every product")
        let shapes = [(1, 1, 1), (6, 16, 8), (7, 17, 33), (37, 45, 300), (150, 70, 321), (13, 160, 700), (200, 33, 1000)]
        for (m, n, k) in shapes {
            for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
                // op(A) is m × k: stored (m, k + 3) or, transposed, (k, m + 5); the same for B with n
                let lda = transA ? m + 5 : k + 3, ldb = transB ? k + 2 : n + 4, ldc = n + 7
                let a = randomTensor([transA ? k : m, lda], seed: UInt64(m * 31 + k))
                let b = randomTensor([transB ? n : k, ldb], seed: UInt64(n * 17 + k))
                let opA = { (i: Int, p: Int) in transA ? a[p * lda + i] : a[i * lda + p] }
                let opB = { (p: Int, j: Int) in transB ? b[j * ldb + p] : b[p * ldb + j] }
                let product = naive(m: m, n: n, k: k, opA, opB)
                let label = "\(m)×\(n)×\(k) transA \(transA) transB \(transB)"
                let tolerance = 2e-6 * Float(k).squareRoot() * 4
                for beta: Float in [0, 1, -0.5] {
                    let c = beta == 0 ? nanTensor([m, ldc]) : randomTensor([m, ldc], seed: 99)
                    let before = c.array
                    XCTAssertEqual(lk_sgemm(transA ? 1 : 0, transB ? 1 : 0, m, n, k, 0.5, a.data, lda, b.data, ldb,
                                            beta, c.data, ldc), 1)
                    var worst: Float = 0
                    for i in 0..<m {
                        for j in 0..<ldc {
                            let got = c[i * ldc + j]
                            if j >= n {
                                // outside the n columns C is untouched (NaN stays NaN)
                                XCTAssert(got.bitPattern == before[i * ldc + j].bitPattern, "\(label): wrote column \(j)")
                                continue
                            }
                            let want = 0.5 * product[i * n + j] + (beta == 0 ? 0 : beta * before[i * ldc + j])
                            let d = abs(got - want)
                            if !(d <= worst) { worst = d }
                        }
                    }
                    XCTAssert(worst <= tolerance, "\(label) beta \(beta): max abs diff \(worst) > \(tolerance)")
                }
            }
        }
    }

    /// Each element of C is summed over K in an order fixed by K alone: computing C whole, in row parts cut
    /// anywhere, or in column parts cut off the 16-column panels gives the same bits — so the thread split of
    /// `GEMM.sgemm` never changes a result.
    func testOwnKernelDoesNotDependOnTheSplit() throws {
        try XCTSkipUnless(lk_has_avx2_fma() == 1, "no AVX2 + FMA on this CPU: OpenBLAS runs every product")
        let m = 50, n = 75, k = 700
        let a = randomTensor([m, k], seed: 1), w = randomTensor([n, k], seed: 2)
        let whole = Tensor(shape: [m, n])
        XCTAssertEqual(lk_sgemm(0, 1, m, n, k, 1, a.data, k, w.data, k, 0, whole.data, n), 1)
        let rowParts = Tensor(shape: [m, n])
        for (lo, hi) in [(0, 7), (7, 8), (8, 31), (31, 50)] {
            XCTAssertEqual(lk_sgemm(0, 1, hi - lo, n, k, 1, a.data + lo * k, k, w.data, k, 0,
                                    rowParts.data + lo * n, n), 1)
        }
        XCTAssertTrue(bitwiseEqual(whole, rowParts), "row parts")
        let columnParts = Tensor(shape: [m, n])
        for (lo, hi) in [(0, 5), (5, 40), (40, 75)] {
            XCTAssertEqual(lk_sgemm(0, 1, m, hi - lo, k, 1, a.data, k, w.data + lo * k, k, 0,
                                    columnParts.data + lo, n), 1)
        }
        XCTAssertTrue(bitwiseEqual(whole, columnParts), "column parts")
        // and GEMM.sgemm gives those bits on one thread and on two (where it runs this kernel: not where OpenBLAS
        // has AVX-512 kernels)
        guard GEMM.kernelInUse == "lorakit-avx2" else { return }
        for threads in [1, 2] {
            Threads.set(threads)
            let split = nanTensor([m, n])
            GEMM.linear(out: split.data, input: a.data, weight: w.data, rows: m, inFeatures: k, outFeatures: n)
            XCTAssertTrue(bitwiseEqual(whole, split), "GEMM.sgemm on \(threads) threads")
        }
    }

    /// `GEMM.kernel = .openblas` sends every product to OpenBLAS; both kernels agree to rounding.
    func testBothKernelsAgree() {
        let m = 64, n = 96, k = 288
        let x = randomTensor([m, k], seed: 3), w = randomTensor([n, k], seed: 4)
        let own = Tensor(shape: [m, n]), openBLAS = Tensor(shape: [m, n])
        GEMM.linear(out: own.data, input: x.data, weight: w.data, rows: m, inFeatures: k, outFeatures: n)
        GEMM.kernel = .openblas
        defer { GEMM.kernel = .lorakit }
        XCTAssertEqual(GEMM.kernelInUse, "openblas")
        GEMM.linear(out: openBLAS.data, input: x.data, weight: w.data, rows: m, inFeatures: k, outFeatures: n)
        checkClose("lorakit against openblas", own, openBLAS, tolerance: 1e-4)
    }
}
