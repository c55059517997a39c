import MiniGPT
@testable import Targeting
import Tensors
import XCTest

/// `lora analyze`: subspace similarity and amplification on cases with known answers.
final class AnalysisTests: XCTestCase {
    func testSubspaceSimilarityOfKnownSubspaces() {
        var rng = RandomGenerator(seed: 1)
        let a = Tensor(shape: [4, 16])
        rng.fillNormal(a.data, count: a.count, std: 1)
        // An adapter with itself: every φ(i, j) is 1.
        for row in AdapterAnalysis.subspaceSimilarity(a, a) { for v in row { XCTAssertEqual(v, 1, accuracy: 1e-9) } }
        // Rows on disjoint coordinates: orthogonal subspaces, φ = 0.
        let x = Tensor(shape: [2, 8]), y = Tensor(shape: [3, 8])
        x[0] = 1; x[8 + 1] = 2                      // e0, e1
        y[2] = 1; y[8 + 3] = 1; y[16 + 4] = 3       // e2, e3, e4
        for row in AdapterAnalysis.subspaceSimilarity(x, y) { for v in row { XCTAssertEqual(v, 0, accuracy: 1e-12) } }
        // A subspace inside a larger one: φ(i, j) = 1 once j covers it.
        let big = Tensor(shape: [3, 8])
        big[0] = 5; big[8 + 1] = 3; big[16 + 2] = 1  // e0, e1, e2 with distinct singular values
        let phi = AdapterAnalysis.subspaceSimilarity(x, big)
        XCTAssertEqual(phi[1][2], 1, accuracy: 1e-9)   // span(e0, e1) ⊂ span(e0, e1, e2)
    }

    func testAmplificationAlongTheWeightsOwnDirections() throws {
        // W = diag(10, 5, 1, …); ΔW along W's top direction: projecting W on ΔW's subspace gives 10.
        let dims = 6
        let w = Tensor(shape: [dims, dims])
        for (i, s) in [10, 5, 1, 0.5, 0.2, 0.1].enumerated() { w[i * dims + i] = Float(s) }
        let a = Tensor(shape: [1, dims]), b = Tensor(shape: [dims, 1])
        a[0] = 1; b[0] = 3
        let lora = LoRALinear(site: AdapterSite(layer: 0, projection: .q), a: a, b: b,
                              aGradient: Tensor(shape: [1, dims]), bGradient: Tensor(shape: [dims, 1]), scale: 2,
                              dropout: 0, dropoutSeed: 0)
        let result = AdapterAnalysis.amplification(module: "q", adapter: lora, weight: w)
        XCTAssertEqual(result.deltaNorm, 6, accuracy: 1e-6)            // ‖s·B·A‖ = 2·3
        XCTAssertEqual(result.projectedOnDelta, 10, accuracy: 1e-6)
        XCTAssertEqual(result.projectedOnTopW, 10, accuracy: 1e-6)
        XCTAssertEqual(result.factor, 0.6, accuracy: 1e-6)
        XCTAssertLessThan(result.projectedOnRandom, 10)
    }
}
