import Checkpoints
import Foundation
import MiniGPT
@testable import Targeting
import Tensors
import XCTest

/// `lora combine` against PEFT's `add_weighted_adapter(["lora-qv", "adapter-b"], [0.7, -0.4], method)`
/// (Tests/Fixtures/export/combine-*, scripts/make_export_fixtures.py).
final class CombineAdaptersTests: XCTestCase {
    override func setUp() { Threads.set(1) }

    func inputs() throws -> [AdapterSet] {
        let dims = try gqaDims()
        return [try AdapterSet.load(directory: Fixtures.peft("lora-qv"), dims: dims),
                try AdapterSet.load(directory: Fixtures.export("adapter-b"), dims: dims)]
    }

    /// Every lora_A / lora_B of `got` equals PEFT's file within `tolerance`; the configs agree on r and alpha.
    func assertMatchesPEFT(_ got: AdapterSet, _ fixture: String, tolerance: Float = 1e-5) throws {
        let directory = Fixtures.export(fixture)
        let want = try AdapterSet.load(directory: directory, dims: got.dims)
        XCTAssertEqual(got.config.r, want.config.r, fixture)
        XCTAssertEqual(got.config.loraAlpha, want.config.loraAlpha, fixture)
        XCTAssertEqual(got.adapters.map(\.site), want.adapters.map(\.site), fixture)
        var worst: Float = 0
        for (g, w) in zip(got.adapters, want.adapters) {
            XCTAssertEqual(g.a.shape, w.a.shape)
            XCTAssertEqual(g.b.shape, w.b.shape)
            worst = max(worst, maxAbsDifference(g.a.data, w.a.data, count: w.a.count),
                        maxAbsDifference(g.b.data, w.b.data, count: w.b.count))
        }
        print("combine \(fixture): max |tensor - PEFT| = \(worst)")
        XCTAssertLessThan(worst, tolerance, fixture)
    }

    func testCatMatchesPEFT() throws {
        let combined = try AdapterCombination.combine(try inputs(), weights: [0.7, -0.4], method: .cat)
        try assertMatchesPEFT(combined, "combine-cat")
        XCTAssertEqual(combined.config.r, 8)
    }

    func testLinearMatchesPEFT() throws {
        let combined = try AdapterCombination.combine(try inputs(), weights: [0.7, -0.4], method: .linear)
        try assertMatchesPEFT(combined, "combine-linear")
    }

    /// SVD factors are unique only up to signs, so the products are compared: ΔW = B·A of each module.
    func testSVDMatchesPEFTUpdates() throws {
        let combined = try AdapterCombination.combine(try inputs(), weights: [0.7, -0.4], method: .svd)
        let want = try AdapterSet.load(directory: Fixtures.export("combine-svd"), dims: combined.dims)
        XCTAssertEqual(combined.config.r, want.config.r)
        XCTAssertEqual(combined.adapters.map(\.site), want.adapters.map(\.site))
        var worst: Float = 0
        for (g, w) in zip(combined.adapters, want.adapters) {
            let a = g.deltaWeight(), b = w.deltaWeight()
            worst = max(worst, maxAbsDifference(a.data, b.data, count: b.count))
        }
        print("combine svd: max |ΔW - PEFT ΔW| = \(worst)")
        XCTAssertLessThan(worst, 1e-5)
    }

    /// cat is exact: its update is the weighted sum of the inputs' updates, module by module.
    func testCatIsExactWeightedSum() throws {
        let sets = try inputs()
        let combined = try AdapterCombination.combine(sets, weights: [0.7, -0.4], method: .cat)
        for lora in combined.adapters {
            let got = lora.deltaWeight()
            let want = Tensor(shape: got.shape)
            for (set, w) in zip(sets, [Float(0.7), -0.4]) {
                guard let d = set.deltaWeight(layer: lora.site.layer, projection: lora.site.projection) else { continue }
                for i in 0..<want.count { want[i] += w * d[i] }
            }
            XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-5, lora.site.moduleName)
        }
    }

    func testOneAdapterCombinesLinearlyAndKeepsItsUpdate() throws {
        let set = try inputs()[0]
        let combined = try AdapterCombination.combine([set], weights: [2], method: .cat)
        XCTAssertEqual(combined.config.r, 4, "one adapter is combined with linear, as PEFT does")
        for lora in combined.adapters {
            let want = try XCTUnwrap(set.deltaWeight(layer: lora.site.layer, projection: lora.site.projection))
            let got = lora.deltaWeight()
            for i in 0..<want.count { XCTAssertEqual(got[i], 2 * want[i], accuracy: 1e-5) }
        }
    }

    /// Inputs on different layers: the union is not every projection × every layer, so full module names are
    /// written — and the saved adapter reloads with exactly those modules.
    func testUnionOfModulesIsKeptAndRoundTrips() throws {
        let dims = try gqaDims()
        let rslora = try AdapterSet.load(directory: Fixtures.peft("lora-all-rslora"), dims: dims)   // layer 1, all 7
        let qv = try AdapterSet.load(directory: Fixtures.peft("lora-qv"), dims: dims)               // q, v of both
        let combined = try AdapterCombination.combine([qv, rslora], weights: [1, 0.5], method: .cat)
        XCTAssertEqual(combined.adapters.count, 9)
        guard case .list(let names) = combined.config.targetModules else { return XCTFail("expected a list") }
        XCTAssertTrue(names.contains("model.layers.0.self_attn.q_proj"), "\(names)")
        let directory = try temporaryDirectory(self) + "/c"
        try combined.save(to: directory)
        let back = try AdapterSet.load(directory: directory, dims: dims)
        XCTAssertEqual(back.adapters.map(\.site), combined.adapters.map(\.site))
        XCTAssertEqual(back.adapters.map(\.scale), Array(repeating: 1, count: 9))
    }

    func testLinearNeedsEqualRanks() throws {
        let dims = try gqaDims()
        let qv = try AdapterSet.load(directory: Fixtures.peft("lora-qv"), dims: dims)
        let rslora = try AdapterSet.load(directory: Fixtures.peft("lora-all-rslora"), dims: dims)
        assertError(["linear", "same rank", "4, 8"]) {
            try AdapterCombination.combine([qv, rslora], weights: [1, 1], method: .linear)
        }
        assertError(["--svd-rank 40", "exceeds"]) {
            try AdapterCombination.combine([qv, rslora], weights: [1, 1], method: .svd, svdRank: 40)
        }
    }

    func testLowRankSVDReconstructsAndOrders() {
        var rng = RandomGenerator(seed: 11)
        var left = LowRankSVD.Matrix(rows: 9, cols: 3), right = LowRankSVD.Matrix(rows: 3, cols: 7)
        for i in 0..<left.values.count { left.values[i] = Double(rng.nextUniform()) - 0.5 }
        for i in 0..<right.values.count { right.values[i] = Double(rng.nextUniform()) - 0.5 }
        let product = left * right
        let (us, vt) = LowRankSVD.truncated(left: left, right: right, rank: 3)
        let rebuilt = us * vt
        for i in 0..<product.values.count { XCTAssertEqual(rebuilt.values[i], product.values[i], accuracy: 1e-12) }
        // Rows of Vᵀ are orthonormal; columns of U·S have decreasing norms (the singular values).
        let gram = vt * vt.transposed
        for i in 0..<3 { for j in 0..<3 { XCTAssertEqual(gram[i, j], i == j ? 1 : 0, accuracy: 1e-12) } }
        let norms = (0..<3).map { c in (0..<9).reduce(0.0) { $0 + us[$1, c] * us[$1, c] }.squareRoot() }
        XCTAssertGreaterThanOrEqual(norms[0], norms[1])
        XCTAssertGreaterThanOrEqual(norms[1], norms[2])
        // Truncating to rank 1 keeps the best rank-1 approximation: its error is the 2nd singular value or more.
        let (us1, vt1) = LowRankSVD.truncated(left: left, right: right, rank: 1)
        let residual = zip((us1 * vt1).values, product.values).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        XCTAssertEqual(residual.squareRoot(), (norms[1] * norms[1] + norms[2] * norms[2]).squareRoot(), accuracy: 1e-10)
    }
}
