import Checkpoints
import Foundation
import MiniGPT
import Targeting
import Tensors
import XCTest

extension Fixtures {
    /// Tests/Fixtures/dora (scripts/make_dora_fixtures.py).
    static func dora(_ name: String) -> String { root.appendingPathComponent("dora/\(name)").path }
}

/// ‖W + s·B·A‖ per output row of a bound DoRA adapter, in Double.
func doraRowNorms(_ adapter: LoRALinear) -> [Double] {
    guard let w = adapter.baseWeight?.f32Tensor else { return [] }
    let inF = adapter.inFeatures, r = adapter.rank
    return (0..<adapter.outFeatures).map { o in
        var sum = 0.0
        for i in 0..<inF {
            var value = Double(w[o * inF + i])
            for j in 0..<r { value += Double(adapter.effectiveScale) * Double(adapter.b[o * r + j]) * Double(adapter.a[j * inF + i]) }
            sum += value * value
        }
        return sum.squareRoot()
    }
}

/// Sets `parameter[i] = value` and rescales the adapter's magnitude so that c = m / ‖W + s·B·A‖ stays what it was:
/// the norm treated as a constant, as DoRA's backward (and PEFT's) treats it.
func setKeepingNormFactor(_ adapter: LoRALinear, _ parameter: Tensor, _ i: Int, _ value: Float) {
    guard let m = adapter.magnitude else { parameter[i] = value; return }
    let before = doraRowNorms(adapter)
    parameter[i] = value
    let after = doraRowNorms(adapter)
    for o in 0..<m.count { m[o] = Float(Double(m[o]) * after[o] / before[o]) }
}

/// DoRA (use_dora) against PEFT: logits, gradients, merge; finite differences of the backward; files.
final class DoRATests: XCTestCase {
    override func setUp() { Threads.set(1) }

    // MARK: against PEFT

    func testForwardMatchesPEFT() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try AdapterSet.load(directory: Fixtures.dora("dora-mixed"), dims: weights.dims)
        XCTAssertTrue(set.isDoRA)
        XCTAssertEqual(set.adapters.count, 8)
        let model = LlamaModel(weights: weights)
        try set.attach(to: model)
        let expected = try SafeTensorsFile(path: Fixtures.dora("dora-mixed") + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let got = try model.logits(TokenBatch(sequences: [ids]))
        let difference = maxAbsDifference(got.data, want.data, count: want.count)
        print("dora-mixed: max |logits - PEFT| = \(difference)")
        XCTAssertLessThan(difference, 1e-4)

        // The magnitudes matter: with m = ‖W + s·B·A‖ (plain LoRA's direction and length) the logits move away.
        for adapter in set.adapters {
            let norms = doraRowNorms(adapter)
            for o in 0..<norms.count { adapter.magnitude?[o] = Float(norms[o]) }
        }
        let unit = try model.logits(TokenBatch(sequences: [ids]))
        XCTAssertGreaterThan(maxAbsDifference(unit.data, want.data, count: want.count), 0.05)
    }

    /// d(mean next-token loss)/d(lora_A, lora_B, lora_magnitude_vector) of one sequence, against PyTorch autograd
    /// through PEFT (norm detached).
    func testGradientsMatchPEFT() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try AdapterSet.load(directory: Fixtures.dora("dora-mixed"), dims: weights.dims)
        let model = LlamaModel(weights: weights)
        try set.attach(to: model)
        let expected = try SafeTensorsFile(path: Fixtures.dora("dora-mixed") + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let batch = TokenBatch(sequences: [ids])
        set.zeroGradients()
        let (sum, count) = try model.loss(batch, backward: true, gradScale: 1 / Float(batch.targetCount), training: true)
        XCTAssertEqual(sum / Double(count), Double(try expected.tensor("loss")[0]), accuracy: 1e-5)
        var worst: Float = 0, checked = 0
        for adapter in set.adapters {
            let site = adapter.site
            var pairs = [(site.tensorNameA, adapter.aGradient), (site.tensorNameB, adapter.bGradient)]
            if let dm = adapter.magnitudeGradient { pairs.append((site.tensorNameMagnitude, dm)) }
            for (name, got) in pairs {
                let want = try expected.tensor("grad." + name)
                XCTAssertEqual(want.count, got.count, name)
                let largest = (0..<want.count).reduce(Float(0)) { max($0, abs(want[$1])) }
                XCTAssertGreaterThan(largest, 0, "\(name): PEFT's gradient is zero, the comparison would mean nothing")
                let difference = maxAbsDifference(got.data, want.data, count: want.count)
                XCTAssertLessThan(difference, 1e-5 + 1e-3 * largest, name)
                worst = max(worst, difference)
                checked += 1
            }
        }
        print("dora-mixed: max |gradient - PEFT| = \(worst) over \(checked) tensors")
        XCTAssertEqual(checked, 24)
    }

    func testMergeMatchesPEFTMergeAndUnload() throws {
        let base = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try AdapterSet.load(directory: Fixtures.dora("dora-mixed"), dims: base.dims)
        let merged = try AdapterMerge.merge(base: base, adapters: [set])
        let expected = try SafeTensorsFile(path: Fixtures.dora("merged") + "/merged.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let got = try LlamaModel(weights: merged).logits(TokenBatch(sequences: [ids]))
        let difference = maxAbsDifference(got.data, want.data, count: want.count)
        print("dora-mixed merged: max |logits - PEFT merge_and_unload| = \(difference)")
        XCTAssertLessThan(difference, 1e-4)
        // Merged equals base + attached adapter, here also with a plain LoRA adapter on q and v of the same model.
        let lora = try AdapterSet.load(directory: Fixtures.peft("lora-qv"), dims: base.dims)
        let both = try AdapterMerge.merge(base: base, adapters: [set, lora])
        let check = try AdapterMerge.logitDifference(base: base, adapters: [set, lora], merged: both,
                                                     tokens: AdapterMerge.checkTokens(base.config))
        XCTAssertLessThan(check.maxDifference, 1e-4)
        XCTAssertGreaterThan(check.maxLogit, 0.5)
    }

    // MARK: finite differences

    let rows = 5, inF = 7, outF = 6, rank = 3

    /// A DoRA adapter over its own buffers, on a random base W, with m ≠ ‖W + s·B·A‖.
    func makeAdapter(dropout: Float, seed: UInt64) -> LoRALinear {
        var rng = RandomGenerator(seed: seed)
        let a = Tensor(shape: [rank, inF]), b = Tensor(shape: [outF, rank]), w = Tensor(shape: [outF, inF])
        let m = Tensor(shape: [outF])
        rng.fillNormal(a.data, count: a.count, std: 0.5)
        rng.fillNormal(b.data, count: b.count, std: 0.5)
        rng.fillNormal(w.data, count: w.count, std: 0.7)
        rng.fillUniform(m.data, count: m.count, low: 0.5, high: 2)
        let adapter = LoRALinear(site: AdapterSite(layer: 0, projection: .q), a: a, b: b,
                                 aGradient: Tensor(shape: a.shape), bGradient: Tensor(shape: b.shape), scale: 1.5,
                                 dropout: dropout, dropoutSeed: seed &+ 1, magnitude: m,
                                 magnitudeGradient: Tensor(shape: m.shape))
        adapter.bindBase(w)
        return adapter
    }

    /// Handed W x by the caller (the projection's own output, `out` itself), DoRA gives the bits it gives when it
    /// computes W x itself, forward and backward; with dropout in training it ignores what it is handed (W·dropout(x)
    /// is another product).
    func testKnownBaseOutputGivesTheSameBits() {
        var rng = RandomGenerator(seed: 31)
        let x = Tensor(shape: [rows, inF]), g = Tensor(shape: [rows, outF])
        rng.fillNormal(x.data, count: x.count, std: 1)
        rng.fillNormal(g.data, count: g.count, std: 1)
        for (dropout, training) in [(Float(0), true), (Float(0.3), false), (Float(0.3), true)] {
            var outputs: [[Float]] = [], gradients: [[Float]] = []
            for handed in [false, true] {
                let adapter = makeAdapter(dropout: dropout, seed: 7)
                let out = Tensor(shape: [rows, outF])
                GEMM.linear(out: out.data, input: x.data, weight: adapter.baseWeight!.f32Tensor.data, rows: rows,
                            inFeatures: inF, outFeatures: outF)
                // a wrong W x where the adapter must not read it: the assertion below catches a read
                let handedBase = handed && dropout > 0 && training ? Tensor(shape: [rows, outF], values: .init(repeating: 9, count: rows * outF)) : out
                if handed {
                    adapter.forward(out: out.data, input: x.data, rows: rows, training: training,
                                    base: handedBase === out ? UnsafePointer(out.data) : UnsafePointer(handedBase.data))
                } else {
                    adapter.forward(out: out.data, input: x.data, rows: rows, training: training)
                }
                let dInput = Tensor(shape: [rows, inF])
                adapter.backward(dInput: dInput.data, dOut: g.data, input: x.data, rows: rows)
                outputs.append(out.array)
                gradients.append(dInput.array + adapter.aGradient.array + adapter.bGradient.array + adapter.magnitudeGradient!.array)
            }
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[1].map(\.bitPattern), "output, dropout \(dropout) training \(training)")
            XCTAssertEqual(gradients[0].map(\.bitPattern), gradients[1].map(\.bitPattern), "gradients, dropout \(dropout) training \(training)")
        }
    }

    /// Without dropout DoRA offers c for the frozen product: (g ⊙ c)·W plus its backward with the term folded equals
    /// g·W plus its full backward (one product through W instead of two); with dropout it offers nothing.
    func testFoldedFrozenTermGivesTheSameGradient() throws {
        var rng = RandomGenerator(seed: 41)
        let x = Tensor(shape: [rows, inF]), g = Tensor(shape: [rows, outF])
        rng.fillNormal(x.data, count: x.count, std: 1)
        rng.fillNormal(g.data, count: g.count, std: 1)
        var results: [[Float]] = []
        for folded in [false, true] {
            let adapter = makeAdapter(dropout: 0, seed: 9)
            let out = Tensor(shape: [rows, outF])
            adapter.forward(out: out.data, input: x.data, rows: rows, training: true)
            let c = try XCTUnwrap(adapter.frozenGradientFactor)
            let w = adapter.baseWeight!.f32Tensor, dOut = g.clone()
            if folded { for i in 0..<dOut.count { dOut[i] *= c[i % outF] } }
            let dInput = Tensor(shape: [rows, inF])
            GEMM.linearBackwardInput(dInput: dInput.data, dOut: dOut.data, weight: w.data, rows: rows, inFeatures: inF,
                                     outFeatures: outF, accumulate: false)
            adapter.backward(dInput: dInput.data, dOut: g.data, input: x.data, rows: rows, frozenTermFolded: folded)
            results.append(dInput.array + adapter.aGradient.array + adapter.bGradient.array + adapter.magnitudeGradient!.array)
        }
        let worst = zip(results[0], results[1]).map { abs($0 - $1) / max(1, abs($0)) }.max() ?? 0
        XCTAssertLessThan(worst, 1e-5)
        XCTAssertGreaterThan(results[0].map(abs).max() ?? 0, 0.1)
        let withDropout = makeAdapter(dropout: 0.3, seed: 9)
        let out = Tensor(shape: [rows, outF])
        withDropout.forward(out: out.data, input: x.data, rows: rows, training: true)
        XCTAssertNil(withDropout.frozenGradientFactor)
        withDropout.forward(out: out.data, input: x.data, rows: rows, training: false)
        XCTAssertNotNil(withDropout.frozenGradientFactor)
    }

    /// The adapted projection by loops in Double: W x + delta = m ⊙ (W + s·B·A) x / ‖W + s·B·A‖ (no dropout).
    func testForwardIsNormalisedProjection() {
        let adapter = makeAdapter(dropout: 0.3, seed: 3)
        var rng = RandomGenerator(seed: 8)
        let x = Tensor(shape: [rows, inF]), out = Tensor(shape: [rows, outF])
        rng.fillNormal(x.data, count: x.count, std: 1)
        let w = adapter.baseWeight!.f32Tensor
        GEMM.linear(out: out.data, input: x.data, weight: w.data, rows: rows, inFeatures: inF, outFeatures: outF)
        adapter.forward(out: out.data, input: x.data, rows: rows, training: false)
        let norms = doraRowNorms(adapter)
        let s = Double(adapter.effectiveScale)
        for n in 0..<rows {
            for o in 0..<outF {
                var y = 0.0
                for i in 0..<inF {
                    var v = Double(w[o * inF + i])
                    for j in 0..<rank { v += s * Double(adapter.b[o * rank + j]) * Double(adapter.a[j * inF + i]) }
                    y += v * Double(x[n * inF + i])
                }
                let want = Double(adapter.magnitude![o]) * y / norms[o]
                XCTAssertEqual(Double(out[n * outF + o]), want, accuracy: 1e-4 * max(1, abs(want)), "[\(n), \(o)]")
            }
        }
        // The merged weight W + delta computes the same.
        let delta = adapter.deltaWeight()
        for n in 0..<rows {
            for o in 0..<outF {
                var y = 0.0
                for i in 0..<inF { y += Double(w[o * inF + i] + delta[o * inF + i]) * Double(x[n * inF + i]) }
                XCTAssertEqual(y, Double(out[n * outF + o]), accuracy: 1e-4 * max(1, abs(y)))
            }
        }
    }

    /// L = Σ G ⊙ delta(x); analytic gradients of A, B, m and x against central differences with the norm held
    /// constant (m rescaled with it), the same dropout mask in every evaluation.
    func checkGradients(dropout: Float) {
        let adapter = makeAdapter(dropout: dropout, seed: 5)
        var rng = RandomGenerator(seed: 21)
        let x = Tensor(shape: [rows, inF]), g = Tensor(shape: [rows, outF]), out = Tensor(shape: [rows, outF])
        rng.fillNormal(x.data, count: x.count, std: 1)
        rng.fillNormal(g.data, count: g.count, std: 1)
        let maskState = adapter.dropoutRNG
        func loss() -> Double {
            adapter.dropoutRNG = maskState
            out.zero()
            adapter.forward(out: out.data, input: x.data, rows: rows, training: true)
            return (0..<out.count).reduce(0.0) { $0 + Double(out[$1]) * Double(g[$1]) }
        }
        _ = loss()
        let dInput = Tensor(shape: [rows, inF])
        dInput.data.update(repeating: 0.25, count: dInput.count)   // the backward must accumulate
        let m = adapter.magnitude!, dm = adapter.magnitudeGradient!
        dm.data.update(repeating: 0.5, count: dm.count)
        adapter.backward(dInput: dInput.data, dOut: g.data, input: x.data, rows: rows)

        let epsilon: Float = 1e-2
        func numeric(_ t: Tensor, _ i: Int, keepNorm: Bool) -> Double {
            let saved = t[i], savedM = m.array
            func set(_ value: Float) {
                // From the unperturbed state, so the norm kept is the one of the analytic gradient.
                t[i] = saved
                m.copy(from: Tensor(shape: [outF], values: savedM))
                if keepNorm { setKeepingNormFactor(adapter, t, i, value) } else { t[i] = value }
            }
            set(saved + epsilon)
            let plus = loss()
            set(saved - epsilon)
            let minus = loss()
            t[i] = saved
            m.copy(from: Tensor(shape: [outF], values: savedM))
            return (plus - minus) / Double(2 * epsilon)
        }
        var zeros = 0
        for (name, parameter, gradient, offset, keepNorm) in [
            ("A", adapter.a, adapter.aGradient, Float(0), true), ("B", adapter.b, adapter.bGradient, Float(0), true),
            ("m", m, dm, Float(0.5), false), ("x", x, dInput, Float(0.25), false),
        ] {
            for i in 0..<parameter.count {
                let want = numeric(parameter, i, keepNorm: keepNorm)
                if want == 0 { zeros += 1 }
                XCTAssertEqual(Double(gradient[i] - offset), want, accuracy: 3e-3 + 2e-3 * abs(want), "\(name)[\(i)]")
            }
        }
        // Dropped inputs get no gradient; without dropout every entry does.
        if dropout > 0 { XCTAssertGreaterThan(zeros, 0) } else { XCTAssertEqual(zeros, 0) }
    }

    func testGradientsWithoutDropout() { checkGradients(dropout: 0) }
    func testGradientsWithDropout() { checkGradients(dropout: 0.3) }

    /// The whole model: DoRA on every projection of layer 1 and on q/down of layer 0 of a tiny random LLaMA.
    func testModelGradients() throws {
        let (weights, _) = LlamaWeights.random(config: tinyConfig(), seed: 7)
        var rng = RandomGenerator(seed: 11)
        for (name, t) in weights.named where !name.hasSuffix("norm.weight") { rng.fillNormal(t.data, count: t.count, std: 0.3) }
        let model = LlamaModel(weights: weights)
        let config = LoRAConfig(r: 2, loraAlpha: 4, targetModules: .list(Projection.allCases.map(\.hfName)),
                                useDora: true)
        let set = try AdapterSet(config: config, targets: Projection.allCases, layers: [1], dims: model.dims,
                                 initialization: .random, seed: 5, base: weights)
        let lower = try AdapterSet(config: config, targets: [.q, .down], layers: [0], dims: model.dims,
                                   initialization: .random, seed: 6, base: weights)
        for adapter in set.adapters + lower.adapters {
            for o in 0..<adapter.outFeatures { adapter.magnitude![o] *= 1 + 0.2 * Float(o % 3 - 1) }
        }
        try set.attach(to: model)
        try lower.attach(to: model)
        let batch = TokenBatch(sequences: [[1, 5, 9, 13, 2, 7], [1, 20, 3]])
        func meanLoss() throws -> Double {
            let (sum, n) = try model.loss(batch, backward: false, training: true)
            return sum / Double(n)
        }
        set.zeroGradients(); lower.zeroGradients()
        _ = try model.loss(batch, backward: true, gradScale: 1 / Float(batch.targetCount), training: true)
        let epsilon: Float = 1e-2
        var checked = 0
        for adapter in set.adapters + lower.adapters {
            let m = adapter.magnitude!
            for (label, parameter, gradient, keepNorm) in [("A", adapter.a, adapter.aGradient, true),
                                                           ("B", adapter.b, adapter.bGradient, true),
                                                           ("m", m, adapter.magnitudeGradient!, false)] {
                for i in stride(from: 0, to: parameter.count, by: max(1, parameter.count / 4)) {
                    let saved = parameter[i], savedM = m.array
                    func set(_ value: Float) {
                        parameter[i] = saved
                        m.copy(from: Tensor(shape: m.shape, values: savedM))
                        if keepNorm { setKeepingNormFactor(adapter, parameter, i, value) } else { parameter[i] = value }
                    }
                    set(saved + epsilon)
                    let plus = try meanLoss()
                    set(saved - epsilon)
                    let minus = try meanLoss()
                    parameter[i] = saved
                    m.copy(from: Tensor(shape: m.shape, values: savedM))
                    let numeric = Float((plus - minus) / Double(2 * epsilon))
                    XCTAssertEqual(gradient[i], numeric, accuracy: 2e-3 + 2e-2 * abs(numeric),
                                   "\(adapter.site.moduleName) \(label)[\(i)]")
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(checked, 80)
    }

    /// DoRA on a QLoRA (NF4) base reads the quantized projections themselves, never an F32 copy of them, and trains
    /// as DoRA on the F32 model of the same (dequantized) weights: magnitudes, loss, every gradient, the merged update.
    func testDoRAOnNF4BaseReadsTheQuantizedWeights() throws {
        let config = tinyConfig(layers: 2, hidden: 32)
        var rng = RandomGenerator(seed: 21)
        let quantized = try LlamaWeights.assemble(config: config, quantization: .nf4(doubleQuant: true)) { name, shape in
            let t = Tensor(shape: shape)
            if name.hasSuffix("norm.weight") { rng.fillUniform(t.data, count: t.count, low: 0.5, high: 1.5) }
            else { rng.fillNormal(t.data, count: t.count, std: 0.3) }
            return t
        }
        // the same model in F32: every projection dequantized
        let dequantized = LlamaWeights(config: quantized.config, embedding: quantized.embedding, layers: quantized.layers.map { l in
            LayerWeights(attentionNorm: l.attentionNorm, q: l.q, k: l.k, v: l.v, o: l.o, ffnNorm: l.ffnNorm,
                         gate: l.gate, up: l.up, down: l.down)
        }, finalNorm: quantized.finalNorm, lmHead: quantized.lmHead)
        XCTAssertTrue(quantized.isQuantized)
        XCTAssertFalse(dequantized.isQuantized)

        let lora = LoRAConfig(r: 4, loraAlpha: 8, targetModules: .list(Projection.allCases.map(\.hfName)), useDora: true)
        let batch = TokenBatch(sequences: [[1, 5, 9, 13, 2, 7], [1, 20, 3]])
        func train(_ weights: LlamaWeights) throws -> (set: AdapterSet, loss: Double) {
            let model = LlamaModel(weights: weights)
            let set = try AdapterSet(config: lora, targets: Projection.allCases, layers: [0, 1], dims: model.dims,
                                     initialization: .random, seed: 5, base: weights)
            for adapter in set.adapters {
                for o in 0..<adapter.outFeatures { adapter.magnitude![o] *= 1 + 0.2 * Float(o % 3 - 1) }
            }
            try set.attach(to: model)
            set.zeroGradients()
            let (sum, count) = try model.loss(batch, backward: true, gradScale: 1 / Float(batch.targetCount))
            return (set, sum / Double(count))
        }
        let (nf4Set, nf4Loss) = try train(quantized)
        let (f32Set, f32Loss) = try train(dequantized)
        for adapter in nf4Set.adapters {
            guard case .nf4(let matrix) = adapter.baseWeight else {
                return XCTFail("\(adapter.site.moduleName): bound to an F32 copy of the NF4 projection")
            }
            XCTAssertTrue(matrix === {
                if case .nf4(let m) = quantized.layers[adapter.site.layer].frozen(adapter.site.projection) { return m }
                return nil
            }(), adapter.site.moduleName)
        }
        XCTAssertEqual(nf4Set.parameters.array, f32Set.parameters.array)  // m = ‖W‖ of the same values
        XCTAssertEqual(nf4Loss, f32Loss, accuracy: 1e-6)
        XCTAssertLessThan(maxAbsDifference(nf4Set.gradients.data, f32Set.gradients.data, count: f32Set.gradients.count), 1e-5)
        XCTAssertGreaterThan(nf4Set.gradients.array.map(abs).max() ?? 0, 1e-3)
        for (a, b) in zip(nf4Set.adapters, f32Set.adapters) {
            let delta = a.deltaWeight(), reference = b.deltaWeight()
            XCTAssertLessThan(maxAbsDifference(delta.data, reference.data, count: reference.count), 1e-6, a.site.moduleName)
        }
    }

    // MARK: initialisation and files

    /// A new DoRA adapter starts as the identity (m = ‖W‖, B = 0), saves lora_magnitude_vector and loads back.
    func testNewAdapterIsIdentityAndRoundTrips() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let config = LoRAConfig(r: 4, loraAlpha: 8, loraDropout: 0.05, useDora: true)
        assertError(["DoRA", "base model's weights"]) {
            try AdapterSet(config: config, targets: [.q, .v], layers: [0, 1], dims: weights.dims)
        }
        let set = try AdapterSet(config: config, targets: [.q, .v, .o], layers: [0, 1], dims: weights.dims,
                                 seed: 3, base: weights)
        // A, B and m of every module, back to back.
        let expectedCount = set.adapters.reduce(0) { $0 + $1.a.count + $1.b.count + $1.outFeatures }
        XCTAssertEqual(set.trainableCount, expectedCount)
        let q = try XCTUnwrap(set.adapter(layer: 1, projection: .q))
        let w = weights.layers[1].q
        for o in 0..<q.outFeatures {
            let norm = (0..<q.inFeatures).reduce(0.0) { $0 + Double(w[o * q.inFeatures + $1]) * Double(w[o * q.inFeatures + $1]) }.squareRoot()
            XCTAssertEqual(Double(q.magnitude![o]), norm, accuracy: 1e-5)
        }
        let ids: [Int32] = [1, 17, 40, 99, 5]
        let model = LlamaModel(weights: weights)
        try set.attach(to: model)
        let adapted = try model.logits(TokenBatch(sequences: [ids]))
        let plain = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
        XCTAssertLessThan(maxAbsDifference(adapted.data, plain.data, count: plain.count), 1e-5)

        // Change everything, save, load: the same numbers and use_dora true.
        var rng = RandomGenerator(seed: 4)
        rng.fillNormal(set.parameters.data, count: set.parameters.count, std: 0.3)
        let directory = try temporaryDirectory(self)
        try set.save(to: directory)
        let json = try readJSON(directory + "/adapter_config.json")
        XCTAssertEqual(json["use_dora"] as? Bool, true)
        let file = try SafeTensorsFile(path: directory + "/adapter_model.safetensors")
        XCTAssertEqual(file.info(q.site.tensorNameMagnitude)?.shape, [q.outFeatures])
        let loaded = try AdapterSet.load(directory: directory, dims: weights.dims)
        XCTAssertTrue(loaded.isDoRA)
        XCTAssertEqual(loaded.parameters.array, set.parameters.array)
    }

    func testBadDoRAFilesAndUnsupportedUses() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let directory = try temporaryDirectory(self)
        // use_dora true on a plain LoRA adapter: the magnitudes are missing.
        let plain = directory + "/plain-says-dora"
        try FileManager.default.copyItem(atPath: Fixtures.peft("lora-qv"), toPath: plain)
        var config = try readJSON(plain + "/adapter_config.json")
        config["use_dora"] = true
        try writeJSON(config, to: plain + "/adapter_config.json")
        assertError(["lora_magnitude_vector", "use_dora"]) { try AdapterSet.load(directory: plain, dims: weights.dims) }
        // Magnitudes in a config without use_dora: refused, not ignored.
        let noFlag = directory + "/dora-without-flag"
        try FileManager.default.copyItem(atPath: Fixtures.dora("dora-mixed"), toPath: noFlag)
        config = try readJSON(noFlag + "/adapter_config.json")
        config["use_dora"] = false
        try writeJSON(config, to: noFlag + "/adapter_config.json")
        assertError(["lora_magnitude_vector", "use_dora: true"]) { try AdapterSet.load(directory: noFlag, dims: weights.dims) }

        let dora = try AdapterSet.load(directory: Fixtures.dora("dora-mixed"), dims: weights.dims)
        assertError(["DoRA", "llama.cpp"]) {
            try GGUFAdapterExport.write(dora, to: directory + "/adapter.gguf")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/adapter.gguf"))
        let lora = try AdapterSet.load(directory: Fixtures.peft("lora-qv"), dims: weights.dims)
        assertError(["adapter 2", "DoRA"]) {
            try AdapterCombination.combine([lora, dora], weights: [1, 1], method: .linear)
        }
    }
}
