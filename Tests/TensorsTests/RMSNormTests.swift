import XCTest
@testable import Tensors

final class RMSNormTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    let rows = 7, dim = 24, eps: Float = 1e-5

    func testForwardMatchesNaive() {
        let x = randomTensor([rows, dim], seed: 1, scale: 2), w = randomTensor([dim], seed: 2)
        let out = nanTensor([rows, dim]), rstd = nanTensor([rows])
        RMSNorm.forward(out: out.data, rstd: rstd.data, input: x.data, weight: w.data, rows: rows, dim: dim, eps: eps)
        let want = Tensor(shape: [rows, dim]), wantRstd = Tensor(shape: [rows])
        for r in 0..<rows {
            var meanSquare: Double = 0
            for i in 0..<dim { meanSquare += Double(x[r * dim + i]) * Double(x[r * dim + i]) }
            let s = 1 / (meanSquare / Double(dim) + Double(eps)).squareRoot()
            wantRstd[r] = Float(s)
            for i in 0..<dim { want[r * dim + i] = Float(Double(w[i]) * Double(x[r * dim + i]) * s) }
        }
        checkClose("RMSNorm out", out, want, tolerance: 1e-5)
        checkClose("RMSNorm rstd", rstd, wantRstd, tolerance: 1e-5)
    }

    func testGradients() {
        let x = randomTensor([rows, dim], seed: 3, scale: 2), w = randomTensor([dim], seed: 4)
        let projector = randomTensor([rows, dim], seed: 5)
        let out = Tensor(shape: [rows, dim]), rstd = Tensor(shape: [rows])
        func loss() -> Double {
            RMSNorm.forward(out: out.data, rstd: rstd.data, input: x.data, weight: w.data, rows: rows, dim: dim, eps: eps)
            return projection(out.data, projector.data, count: out.count)
        }
        _ = loss()
        // backward accumulates: start from a known non-zero value and subtract it afterwards
        let dx = Tensor(shape: [rows, dim]), dw = Tensor(shape: [dim])
        dx.data.update(repeating: 0.5, count: dx.count)
        dw.data.update(repeating: -0.25, count: dw.count)
        RMSNorm.backward(dInput: dx.data, dWeight: dw.data, dOut: projector.data, input: x.data, weight: w.data,
                         rstd: rstd.data, rows: rows, dim: dim)
        for i in 0..<dx.count { dx[i] -= 0.5 }
        for i in 0..<dw.count { dw[i] += 0.25 }
        GradientCheck.check("RMSNorm dInput", input: x, analytic: dx, loss: loss)
        GradientCheck.check("RMSNorm dWeight", input: w, analytic: dw, loss: loss)

        // a frozen weight (nil) leaves dInput identical
        let dxFrozen = Tensor(shape: [rows, dim])
        RMSNorm.backward(dInput: dxFrozen.data, dWeight: nil, dOut: projector.data, input: x.data, weight: w.data,
                         rstd: rstd.data, rows: rows, dim: dim)
        checkClose("RMSNorm dInput, frozen weight", dxFrozen, dx, tolerance: 1e-6)
    }

    func testWeightGradientDoesNotDependOnThreadCount() {
        let rows = 33, dim = 200
        let x = randomTensor([rows, dim], seed: 6), w = randomTensor([dim], seed: 7)
        let dOut = randomTensor([rows, dim], seed: 8)
        let out = Tensor(shape: [rows, dim]), rstd = Tensor(shape: [rows])
        RMSNorm.forward(out: out.data, rstd: rstd.data, input: x.data, weight: w.data, rows: rows, dim: dim, eps: eps)
        func gradients(threads: Int) -> (Tensor, Tensor) {
            withThreads(threads) {
                let dx = Tensor(shape: [rows, dim]), dw = Tensor(shape: [dim])
                RMSNorm.backward(dInput: dx.data, dWeight: dw.data, dOut: dOut.data, input: x.data, weight: w.data,
                                 rstd: rstd.data, rows: rows, dim: dim)
                return (dx, dw)
            }
        }
        let (dx1, dw1) = gradients(threads: 1), (dx2, dw2) = gradients(threads: 2)
        XCTAssertTrue(bitwiseEqual(dx1, dx2))
        XCTAssertTrue(bitwiseEqual(dw1, dw2))
    }
}
