import XCTest
@testable import Tensors

/// The NF4 products against dequantize-then-sgemm, over tile and thread splits, and their finite-difference gradient.
final class NF4GEMMTests: XCTestCase {
    override func setUp() { Threads.set(2) }
    override func tearDown() { NF4GEMM.panelFloats = 1 << 19 }

    private func matrix(_ rows: Int, _ columns: Int, seed: UInt64, doubleQuant: Bool = true) throws -> NF4Matrix {
        let w = randomTensor([rows, columns], seed: seed)
        return try NF4Matrix(quantizing: w, doubleQuant: doubleQuant, label: "test")
    }

    /// Forward and input gradient for shapes with short blocks (odd columns), one row (generation), several tiles
    /// (a shrunken panel) and one or two threads.
    func testProductsMatchDequantizedSGEMM() throws {
        let cases: [(rows: Int, outF: Int, inF: Int, panel: Int, threads: Int)] = [
            (13, 9, 17, 1 << 19, 1), (13, 150, 77, 1 << 19, 2), (1, 150, 77, 1 << 19, 2),
            (40, 300, 200, 16 * 200, 2), (7, 300, 200, 40 * 37, 2), (64, 96, 1000, 1 << 19, 2)]
        for (i, c) in cases.enumerated() {
            NF4GEMM.panelFloats = c.panel
            try withThreads(c.threads) {
                let w = try matrix(c.outF, c.inF, seed: UInt64(10 + i), doubleQuant: i % 2 == 0)
                let dense = w.dequantized()
                let x = randomTensor([c.rows, c.inF], seed: UInt64(20 + i))
                let label = "case \(i) rows \(c.rows) [\(c.outF), \(c.inF)] threads \(c.threads)"

                let want = Tensor(shape: [c.rows, c.outF])
                GEMM.linear(out: want.data, input: x.data, weight: dense.data, rows: c.rows, inFeatures: c.inF,
                            outFeatures: c.outF)
                let got = nanTensor([c.rows, c.outF])
                NF4GEMM.linear(out: got.data, input: x.data, weight: w, rows: c.rows)
                checkClose("linear \(label)", got, want, tolerance: 1e-4)
                NF4GEMM.linear(out: got.data, input: x.data, weight: w, rows: c.rows, accumulate: true)
                for j in 0..<want.count { want[j] *= 2 }
                checkClose("linear accumulate \(label)", got, want, tolerance: 2e-4)

                let dy = randomTensor([c.rows, c.outF], seed: UInt64(30 + i))
                let wantDx = Tensor(shape: [c.rows, c.inF])
                GEMM.linearBackwardInput(dInput: wantDx.data, dOut: dy.data, weight: dense.data, rows: c.rows,
                                         inFeatures: c.inF, outFeatures: c.outF, accumulate: false)
                let dx = nanTensor([c.rows, c.inF])
                NF4GEMM.linearBackwardInput(dInput: dx.data, dOut: dy.data, weight: w, rows: c.rows, accumulate: false)
                checkClose("backward input \(label)", dx, wantDx, tolerance: 1e-4)
                NF4GEMM.linearBackwardInput(dInput: dx.data, dOut: dy.data, weight: w, rows: c.rows, accumulate: true)
                for j in 0..<wantDx.count { wantDx[j] *= 2 }
                checkClose("backward input accumulate \(label)", dx, wantDx, tolerance: 2e-4)
            }
        }
    }

    /// Same sizes and thread count, same bits (DESIGN §4); another thread count moves only rounding.
    func testDeterministic() throws {
        let w = try matrix(200, 300, seed: 3)
        let x = randomTensor([33, 300], seed: 4)
        let one = Tensor(shape: [33, 200]), two = Tensor(shape: [33, 200]), again = Tensor(shape: [33, 200])
        withThreads(1) { NF4GEMM.linear(out: one.data, input: x.data, weight: w, rows: 33) }
        withThreads(2) {
            NF4GEMM.linear(out: two.data, input: x.data, weight: w, rows: 33)
            NF4GEMM.linear(out: again.data, input: x.data, weight: w, rows: 33)
        }
        XCTAssertTrue(bitwiseEqual(two, again))
        checkClose("one vs two threads", one, two, tolerance: 1e-4)
    }

    /// dX of y = x Wᵀ through the NF4 weight, by finite differences of L = Σ y·p.
    func testBackwardInputFiniteDifferences() throws {
        let (rows, outF, inF) = (5, 70, 45)
        let w = try matrix(outF, inF, seed: 8)
        let x = randomTensor([rows, inF], seed: 9), projector = randomTensor([rows, outF], seed: 10)
        let y = Tensor(shape: [rows, outF])
        let dx = Tensor(shape: [rows, inF])
        NF4GEMM.linearBackwardInput(dInput: dx.data, dOut: projector.data, weight: w, rows: rows, accumulate: false)
        GradientCheck.check("NF4 linear dX", input: x, analytic: dx, tolerance: 1e-3) {
            NF4GEMM.linear(out: y.data, input: x.data, weight: w, rows: rows)
            return projection(y.data, projector.data, count: y.count)
        }
    }

    /// Dequantization of any sub-rectangle equals the same part of the whole (odd column offsets start mid-byte).
    func testSubPanelDequantization() throws {
        let w = try matrix(11, 37, seed: 12)
        let whole = w.dequantized()
        let panel = Tensor(shape: [5, 20])
        w.dequantize(rows: 3..<8, columns: 5..<25, into: panel.data, ldPanel: 20)
        for r in 0..<5 { for c in 0..<20 { XCTAssertEqual(panel[r * 20 + c], whole[(r + 3) * 37 + c + 5]) } }
    }

    /// Memory: 4 bits per weight plus the scales.
    func testStorageBytes() throws {
        let plain = try matrix(128, 256, seed: 1, doubleQuant: false), dq = try matrix(128, 256, seed: 1)
        let n = 128 * 256
        XCTAssertEqual(plain.storageBytes, n / 2 + 4 * (n / 64))
        XCTAssertEqual(dq.storageBytes, n / 2 + n / 64 + 4 * 2 + 4)
        XCTAssertLessThan(Double(dq.storageBytes) / Double(4 * n), 0.13)
    }

    func testNonFiniteWeightIsAnError() {
        let w = randomTensor([4, 64], seed: 2)
        w[100] = .nan
        XCTAssertThrowsError(try NF4Matrix(quantizing: w, label: "model.layers.0.self_attn.q_proj.weight")) { error in
            XCTAssertTrue("\(error)".contains("q_proj") && "\(error)".contains("element 100"), "\(error)")
        }
    }
}
