import Checkpoints
import MiniGPT
import Targeting
import Tensors
import XCTest

/// Logits of the tiny gqa model with adapters written by Hugging Face PEFT (scripts/make_peft_fixtures.py),
/// against the logits PEFT computed with them.
final class PEFTGoldenTests: XCTestCase {
    func checkGolden(_ name: String, modules: Int) throws {
        Threads.set(1)
        let directory = Fixtures.peft(name)
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try AdapterSet.load(directory: directory, dims: weights.dims)
        XCTAssertEqual(set.adapters.count, modules)
        let model = LlamaModel(weights: weights)
        try set.attach(to: model)

        let expected = try SafeTensorsFile(path: directory + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let got = try model.logits(TokenBatch(sequences: [ids]))
        XCTAssertEqual(got.shape, want.shape)
        let difference = maxAbsDifference(got.data, want.data, count: want.count)
        print("\(name): max |logits - PEFT| = \(difference)")
        XCTAssertLessThan(difference, 1e-4, name)

        // The comparison means something: without the adapter the logits are far from PEFT's.
        let base = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
        XCTAssertGreaterThan(maxAbsDifference(base.data, want.data, count: want.count), 0.05, name)
    }

    func testLoRAOnQAndV() throws { try checkGolden("lora-qv", modules: 4) }
    func testRsLoRAOnEveryProjectionOfLayerOne() throws { try checkGolden("lora-all-rslora", modules: 7) }
    func testRankAndAlphaPatterns() throws {
        try checkGolden("lora-pattern", modules: 10)
        let set = try AdapterSet.load(directory: Fixtures.peft("lora-pattern"), dims: try gqaDims())
        XCTAssertEqual(set.adapter(layer: 1, projection: .q)?.rank, 6)
        XCTAssertEqual(set.adapter(layer: 0, projection: .q)?.rank, 4)
        XCTAssertEqual(set.adapter(layer: 1, projection: .o)?.rank, 2)
        XCTAssertEqual(set.adapter(layer: 0, projection: .down)?.scale, 0.75)
    }

    /// Generation runs the adapters over chunks of changing size (the prompt, then one token at a time): every
    /// step's logits equal the full forward's row.
    func testGeneratorUsesTheAdapters() throws {
        Threads.set(1)
        let directory = Fixtures.peft("lora-all-rslora")
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let model = LlamaModel(weights: weights)
        try AdapterSet.load(directory: directory, dims: weights.dims).attach(to: model)
        let expected = try SafeTensorsFile(path: directory + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let vocab = want.columns
        let generator = Generator(model: model, capacity: 16)
        let prompt = 3
        var worst = maxAbsDifference(try generator.append(Array(ids[..<prompt])).data,
                                     want.data + (prompt - 1) * vocab, count: vocab)
        for t in prompt..<ids.count {
            let logits = try generator.append([ids[t]])
            worst = max(worst, maxAbsDifference(logits.data, want.data + t * vocab, count: vocab))
        }
        print("generator with lora-all-rslora: max |logits - PEFT| = \(worst)")
        XCTAssertLessThan(worst, 1e-4)
    }
}
