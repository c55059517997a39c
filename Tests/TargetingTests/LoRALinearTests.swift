import MiniGPT
import Targeting
import Tensors
import XCTest

/// Finite-difference checks of one adapter's forward and backward, without and with dropout.
final class LoRALinearTests: XCTestCase {
    let rows = 5, inF = 7, outF = 6, rank = 3
    let scale: Float = 1.5

    /// An adapter with random A and B over its own buffers.
    func makeAdapter(dropout: Float, seed: UInt64) -> LoRALinear {
        var rng = RandomGenerator(seed: seed)
        let a = Tensor(shape: [rank, inF]), b = Tensor(shape: [outF, rank])
        rng.fillNormal(a.data, count: a.count, std: 0.5)
        rng.fillNormal(b.data, count: b.count, std: 0.5)
        return LoRALinear(site: AdapterSite(layer: 0, projection: .q), a: a, b: b,
                          aGradient: Tensor(shape: a.shape), bGradient: Tensor(shape: b.shape),
                          scale: scale, dropout: dropout, dropoutSeed: seed &+ 1)
    }

    /// out = s · (x Aᵀ) Bᵀ by loops, in Double.
    func reference(_ adapter: LoRALinear, _ x: Tensor) -> [Double] {
        var out = [Double](repeating: 0, count: rows * outF)
        for n in 0..<rows {
            var h = [Double](repeating: 0, count: rank)
            for j in 0..<rank { for i in 0..<inF { h[j] += Double(x[n * inF + i]) * Double(adapter.a[j * inF + i]) } }
            for o in 0..<outF {
                for j in 0..<rank { out[n * outF + o] += Double(adapter.effectiveScale) * h[j] * Double(adapter.b[o * rank + j]) }
            }
        }
        return out
    }

    func testForwardAddsScaledLowRankProductAndDelta() {
        Threads.set(1)
        let adapter = makeAdapter(dropout: 0.5, seed: 3)
        var rng = RandomGenerator(seed: 9)
        let x = Tensor(shape: [rows, inF]), base = Tensor(shape: [rows, outF]), out = Tensor(shape: [rows, outF])
        rng.fillNormal(x.data, count: x.count, std: 1)
        rng.fillNormal(base.data, count: base.count, std: 1)
        out.copy(from: base)
        // Eval mode: no dropout even though p = 0.5.
        adapter.forward(out: out.data, input: x.data, rows: rows, training: false)
        let want = reference(adapter, x)
        for i in 0..<out.count { XCTAssertEqual(Double(out[i] - base[i]), want[i], accuracy: 1e-5) }
        // x · deltaWeightᵀ is the same update.
        let delta = adapter.deltaWeight()
        XCTAssertEqual(delta.shape, [outF, inF])
        for n in 0..<rows {
            for o in 0..<outF {
                var sum: Double = 0
                for i in 0..<inF { sum += Double(x[n * inF + i]) * Double(delta[o * inF + i]) }
                XCTAssertEqual(sum, want[n * outF + o], accuracy: 1e-5)
            }
        }
        // The multiplier scales the output.
        adapter.multiplier = 0.25
        out.zero()
        adapter.forward(out: out.data, input: x.data, rows: rows, training: false)
        for i in 0..<out.count { XCTAssertEqual(Double(out[i]), want[i] * 0.25, accuracy: 1e-5) }
    }

    func testDropoutDropsAndRescales() {
        Threads.set(1)
        let p: Float = 0.4
        let adapter = makeAdapter(dropout: p, seed: 4)
        let big = 400
        // One input feature set to 1 everywhere, A = e₀: then h[n, j] = dropout(x)[n, 0] · A[j, 0] exposes the mask.
        let x = Tensor(shape: [big, inF]), out = Tensor(shape: [big, outF])
        for n in 0..<big { x[n * inF] = 1 }
        adapter.a.zero(); adapter.a[0] = 1
        adapter.b.zero(); adapter.b[0] = 1
        adapter.multiplier = 1 / scale
        adapter.forward(out: out.data, input: x.data, rows: big, training: true)
        var kept = 0
        for n in 0..<big {
            let value = out[n * outF]
            XCTAssertTrue(value == 0 || abs(value - 1 / (1 - p)) < 1e-6, "row \(n): \(value)")
            if value != 0 { kept += 1 }
        }
        // Binomial(400, 0.6): mean 240, sd ≈ 9.8.
        XCTAssertEqual(Double(kept), 240, accuracy: 45)
        // Another call draws another mask.
        let first = out.array
        out.zero()
        adapter.forward(out: out.data, input: x.data, rows: big, training: true)
        XCTAssertNotEqual(out.array, first)
    }

    /// L = Σ G ⊙ out with a fixed random G, so dOut = G; compares the analytic gradients of A, B and x with
    /// central differences. With dropout, the generator is restored before every forward so that all evaluations
    /// see the same mask.
    func checkGradients(dropout: Float) throws {
        Threads.set(1)
        let adapter = makeAdapter(dropout: dropout, seed: 5)
        var rng = RandomGenerator(seed: 21)
        let x = Tensor(shape: [rows, inF]), g = Tensor(shape: [rows, outF])
        rng.fillNormal(x.data, count: x.count, std: 1)
        rng.fillNormal(g.data, count: g.count, std: 1)
        let out = Tensor(shape: [rows, outF])
        let maskState = adapter.dropoutRNG

        func loss() -> Double {
            adapter.dropoutRNG = maskState
            out.zero()
            adapter.forward(out: out.data, input: x.data, rows: rows, training: true)
            var sum: Double = 0
            for i in 0..<out.count { sum += Double(out[i]) * Double(g[i]) }
            return sum
        }

        _ = loss()
        let dInput = Tensor(shape: [rows, inF])
        dInput.data.update(repeating: 0.25, count: dInput.count)   // the backward must accumulate into it
        adapter.aGradient.data.update(repeating: 0.5, count: adapter.aGradient.count)
        adapter.bGradient.data.update(repeating: -0.5, count: adapter.bGradient.count)
        adapter.backward(dInput: dInput.data, dOut: g.data, input: x.data, rows: rows)

        let epsilon: Float = 1e-2
        func numeric(_ t: Tensor, _ i: Int) -> Double {
            let saved = t[i]
            t[i] = saved + epsilon
            let plus = loss()
            t[i] = saved - epsilon
            let minus = loss()
            t[i] = saved
            return (plus - minus) / Double(2 * epsilon)
        }
        var zeros = 0
        for (name, parameter, gradient, offset) in [("A", adapter.a, adapter.aGradient, Float(0.5)),
                                                    ("B", adapter.b, adapter.bGradient, Float(-0.5)),
                                                    ("x", x, dInput, Float(0.25))] {
            for i in 0..<parameter.count {
                let want = numeric(parameter, i)
                if want == 0 { zeros += 1 }
                XCTAssertEqual(Double(gradient[i] - offset), want, accuracy: 2e-3 + 1e-3 * abs(want), "\(name)[\(i)]")
            }
        }
        if dropout > 0 {
            // Dropped inputs have no gradient: some x entries must have been dropped for the test to mean anything.
            XCTAssertGreaterThan(zeros, 0)
        } else {
            XCTAssertEqual(zeros, 0)
        }
    }

    func testGradientsWithoutDropout() throws { try checkGradients(dropout: 0) }
    func testGradientsWithDropout() throws { try checkGradients(dropout: 0.3) }

    /// A frozen adapter passes the input gradient but leaves its own gradients alone.
    func testFrozenAdapterOnlyPassesInputGradient() {
        Threads.set(1)
        let adapter = makeAdapter(dropout: 0, seed: 6)
        adapter.trainable = false
        var rng = RandomGenerator(seed: 2)
        let x = Tensor(shape: [rows, inF]), g = Tensor(shape: [rows, outF]), out = Tensor(shape: [rows, outF])
        rng.fillNormal(x.data, count: x.count, std: 1)
        rng.fillNormal(g.data, count: g.count, std: 1)
        adapter.forward(out: out.data, input: x.data, rows: rows, training: true)
        let dInput = Tensor(shape: [rows, inF])
        adapter.backward(dInput: dInput.data, dOut: g.data, input: x.data, rows: rows)
        XCTAssertTrue(adapter.aGradient.array.allSatisfy { $0 == 0 })
        XCTAssertTrue(adapter.bGradient.array.allSatisfy { $0 == 0 })
        XCTAssertTrue(dInput.array.contains { $0 != 0 })
    }
}
