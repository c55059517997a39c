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
}
