import Checkpoints
import MiniGPT
import Tensors
import XCTest

/// NF4 quantization against the numpy reimplementation of bitsandbytes (fixtures by scripts/make_nf4_fixtures.py),
/// and the NF4 model against transformers run on the same dequantized weights.
final class NF4Tests: XCTestCase {
    static func fixture() throws -> SafeTensorsFile {
        try SafeTensorsFile(path: Fixtures.root.appendingPathComponent("nf4/nf4.safetensors").path)
    }

    private func assertBitwise(_ got: [Float], _ want: Tensor, _ label: String, file: StaticString = #filePath,
                               line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, label, file: file, line: line)
        let mismatches = zip(got, want.array).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        XCTAssertTrue(mismatches.isEmpty, "\(label): \(mismatches.count) values differ, first at \(mismatches.first?.offset ?? -1): "
            + "\(mismatches.first.map { "\($0.element.0) vs \($0.element.1)" } ?? "")", file: file, line: line)
    }

    func testDynamicMapIsBitsandbytes() throws {
        assertBitwise(DynamicMap.signed, try Self.fixture().tensor("dynamic_map"), "create_dynamic_map(signed=True)")
    }

    /// Codes, packing, scales and dequantized values bit for bit, with and without double quantization, on a matrix
    /// with a short last block, an odd count, an all-zero block and exact codes and midpoints (tail), and on one
    /// with a full and a short block of 256 scales (wide).
    func testQuantizationMatchesReference() throws {
        let f = try Self.fixture()
        for name in ["tail", "wide"] {
            let input = try f.tensor("\(name).input")
            let codes = try f.tensor("\(name).codes").array.map { UInt8($0) }
            let packed = try f.tensor("\(name).packed").array.map { UInt8($0) }
            for doubleQuant in [false, true] {
                let label = "\(name)\(doubleQuant ? " (double quant)" : "")"
                let m = try NF4Matrix(quantizing: input, doubleQuant: doubleQuant, label: name)
                XCTAssertEqual([m.rows, m.columns], input.shape)
                XCTAssertEqual((0..<m.count).map { m.codeIndex($0) }, codes, "\(label): codes")
                XCTAssertEqual(m.packedCodes, packed, "\(label): packed bytes")
                switch m.scales {
                case .f32(let absmax):
                    XCTAssertFalse(doubleQuant)
                    assertBitwise(absmax, try f.tensor("\(name).absmax"), "\(label): absmax")
                case .doubleQuantized(let dqCodes, let absmax, let offset):
                    XCTAssertTrue(doubleQuant)
                    XCTAssertEqual(dqCodes, try f.tensor("\(name).dq_codes").array.map { UInt8($0) }, "\(label): 8-bit codes")
                    assertBitwise(absmax, try f.tensor("\(name).dq_absmax"), "\(label): second-level absmax")
                    assertBitwise([offset], try f.tensor("\(name).dq_offset"), "\(label): offset")
                }
                let want = try f.tensor(doubleQuant ? "\(name).dq_dequantized" : "\(name).dequantized")
                assertBitwise(m.dequantized().array, want, "\(label): dequantized")
            }
        }
    }

    /// The gqa fixture model with NF4 projections: logits within 1e-4 of transformers on the reference's dequantized
    /// weights, and far closer to them than the F32 model is.
    func testForwardMatchesNF4Reference() throws {
        let f = try Self.fixture()
        let ids = try f.tensor("gqa.ids").array.map { Int32($0) }
        let f32Reference = try f.tensor("gqa.logits_f32")
        let f32Model = LlamaModel(weights: try LlamaWeights.load(directory: Fixtures.model("gqa")))
        let f32Logits = try f32Model.logits(TokenBatch(sequences: [ids]))
        XCTAssertLessThan(maxAbsDifference(f32Logits.data, f32Reference.data, count: f32Reference.count), 1e-4)
        for (key, doubleQuant) in [("gqa.logits_nf4", true), ("gqa.logits_nf4_nodq", false)] {
            let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"), quantization: .nf4(doubleQuant: doubleQuant))
            XCTAssertTrue(weights.isQuantized)
            let want = try f.tensor(key)
            let got = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
            let nf4Error = maxAbsDifference(got.data, want.data, count: want.count)
            let f32Error = maxAbsDifference(f32Logits.data, want.data, count: want.count)
            print("\(key): NF4 model max |Δlogit| \(nf4Error), F32 model \(f32Error)")
            XCTAssertLessThan(nf4Error, 1e-4, key)
            XCTAssertGreaterThan(f32Error, 1000 * nf4Error, key)
            XCTAssertGreaterThan(f32Error, 0.1, key)
        }
    }

    /// The seven projections take under 30 % of their F32 bytes; everything else stays F32.
    func testProjectionMemory() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"), quantization: .nf4(doubleQuant: true))
        let bytes = weights.projectionBytes
        print("gqa projections: \(bytes.stored) bytes NF4, \(bytes.f32) bytes F32")
        XCTAssertLessThan(Double(bytes.stored), 0.3 * Double(bytes.f32))
        let plain = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        XCTAssertEqual(plain.projectionBytes.stored, plain.projectionBytes.f32)
        XCTAssertEqual(weights.parameterCount, plain.parameterCount)
        XCTAssertEqual(weights.embedding.array, plain.embedding.array)
        XCTAssertEqual(weights.lmHead.array, plain.lmHead.array)
    }

    /// A model of the dequantized weights in F32, for comparing the NF4 products with plain sgemm.
    private func dequantizedCopy(_ w: LlamaWeights) -> LlamaWeights {
        LlamaWeights(config: w.config, embedding: w.embedding.clone(), layers: w.layers.map { l in
            LayerWeights(attentionNorm: l.attentionNorm, q: l.q, k: l.k, v: l.v, o: l.o, ffnNorm: l.ffnNorm,
                         gate: l.gate, up: l.up, down: l.down)
        }, finalNorm: w.finalNorm, lmHead: w.lmHead)
    }

    /// Backward through every NF4 projection: the embedding gradient equals the dequantized F32 model's, and
    /// finite differences of the NF4 model's loss confirm it.
    func testBackwardThroughNF4Projections() throws {
        Threads.set(1)
        let config = ModelGradientTests.tinyConfig(tied: false)
        var rng = RandomGenerator(seed: 5)
        let weights = try LlamaWeights.assemble(config: config, quantization: .nf4(doubleQuant: true)) { name, shape in
            let t = Tensor(shape: shape)
            if name.hasSuffix("norm.weight") { rng.fillUniform(t.data, count: t.count, low: 0.5, high: 1.5) }
            else { rng.fillNormal(t.data, count: t.count, std: 0.3) }
            return t
        }
        let batch = TokenBatch(sequences: [[1, 5, 9, 13, 2, 7], [1, 20, 3]])
        let scale = 1 / Float(batch.targetCount)
        func embeddingGradient(_ w: LlamaWeights) throws -> (LlamaModel, Tensor) {
            let model = LlamaModel(weights: w)
            let (grads, _) = LlamaWeights.zeros(config: config)
            model.weightGradients = grads
            _ = try model.loss(batch, backward: true, gradScale: scale)
            return (model, grads.embedding)
        }
        let (model, nf4Gradient) = try embeddingGradient(weights)
        let (_, f32Gradient) = try embeddingGradient(dequantizedCopy(weights))
        XCTAssertLessThan(maxAbsDifference(nf4Gradient.data, f32Gradient.data, count: nf4Gradient.count), 1e-5)

        model.weightGradients = nil
        let e = weights.embedding, epsilon: Float = 1e-2
        var checked = 0
        for token in [1, 5, 9, 20] {
            for c in stride(from: 0, to: config.hiddenSize, by: 3) {
                let i = token * config.hiddenSize + c, saved = e[i]
                e[i] = saved + epsilon
                let plus = try ModelGradientTests.meanLoss(model, batch)
                e[i] = saved - epsilon
                let minus = try ModelGradientTests.meanLoss(model, batch)
                e[i] = saved
                let numeric = Float((plus - minus) / Double(2 * epsilon))
                XCTAssertEqual(nf4Gradient[i], numeric, accuracy: 2e-3 + 2e-2 * abs(numeric), "embedding[\(i)]")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 20)
    }

    /// Projections whose sizes are not multiples of 64 (blocks span rows, the last is short, counts are odd): the NF4
    /// model computes what the F32 model of its dequantized weights computes, forward and backward.
    func testProjectionSizesThatDoNotDivideIntoBlocks() throws {
        Threads.set(2)
        let config = LlamaConfig(vocabSize: 29, hiddenSize: 21, intermediateSize: 35, numHiddenLayers: 2,
                                 numAttentionHeads: 3, numKeyValueHeads: 1, headDim: 6, rmsNormEps: 1e-5,
                                 maxPositionEmbeddings: 32, tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2,
                                 padTokenId: nil, ropeTheta: 10000)
        let weights = try LlamaWeights.random(config: config, seed: 3, quantization: .nf4(doubleQuant: true))
        XCTAssertTrue([Projection.q, .k, .o, .gate, .down].allSatisfy { p in
            let f = p.features(weights.dims)
            return (f.inFeatures * f.outFeatures) % NF4Matrix.blockSize != 0
        })
        let batch = TokenBatch(sequences: [[1, 5, 9, 13, 2, 7, 28], [1, 20, 3]])
        let nf4 = LlamaModel(weights: weights), f32 = LlamaModel(weights: dequantizedCopy(weights))
        let a = try nf4.logits(batch), b = try f32.logits(batch)
        XCTAssertLessThan(maxAbsDifference(a.data, b.data, count: a.count), 1e-5)
        var gradients: [Tensor] = []
        for model in [nf4, f32] {
            let (grads, _) = LlamaWeights.zeros(config: config)
            model.weightGradients = grads
            _ = try model.loss(batch, backward: true, gradScale: 1 / Float(batch.targetCount))
            gradients.append(grads.embedding)
        }
        XCTAssertLessThan(maxAbsDifference(gradients[0].data, gradients[1].data, count: gradients[0].count), 1e-6)
    }

    /// Generation through the KV cache with an NF4 base gives the full forward's logits.
    func testCachedGenerationWithNF4Base() throws {
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"), quantization: .nf4(doubleQuant: true))
        let model = LlamaModel(weights: weights)
        let tokens: [Int32] = [1, 17, 42, 99, 5, 63]
        let full = try model.logits(TokenBatch(sequences: [tokens]))
        let generator = Generator(model: model, capacity: 16)
        let v = weights.dims.vocab
        try generator.append(Array(tokens[0..<3]))
        XCTAssertLessThan(maxAbsDifference(generator.logits.data, full.data + 2 * v, count: v), 1e-4)
        for i in 3..<tokens.count {
            try generator.append([tokens[i]])
            XCTAssertLessThan(maxAbsDifference(generator.logits.data, full.data + i * v, count: v), 1e-4)
        }
    }

    func testUnknownSchemeIsAnError() {
        XCTAssertThrowsError(try BaseQuantization(scheme: "int3")) { error in
            XCTAssertEqual("\(error)", "--quantize: unknown scheme 'int3' (choices: none, nf4)")
        }
        XCTAssertEqual(try BaseQuantization(scheme: "NF4", doubleQuant: false), .nf4(doubleQuant: false))
        XCTAssertEqual(try BaseQuantization(scheme: "none"), BaseQuantization.none)
    }
}
