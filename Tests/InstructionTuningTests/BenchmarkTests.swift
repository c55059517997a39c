import Checkpoints
import Foundation
import InstructionTuning
import MiniGPT
import Targeting
import Tensors
import XCTest

/// `lora bench`'s library: what it reports, how it counts FLOPs, and its refusals. Speeds are not checked here
/// (the tests run on noisy machines); scripts/bench-vs-pytorch.sh measures them.
final class BenchmarkTests: XCTestCase {
    func tinyOptions() -> BenchmarkOptions {
        var o = BenchmarkOptions()
        o.dim = 32; o.layers = 2; o.heads = 4; o.kvHeads = 2; o.hidden = 48; o.vocab = 97; o.seq = 12; o.batch = 3
        o.targets = "q,v_proj"; o.rank = 4; o.steps = 2; o.warmup = 1; o.threads = 2
        o.sgemmSizes = [96]
        return o
    }

    func testTrainingBenchmarkReportsTheRun() throws {
        let options = tinyOptions()
        var steps: [Int] = []
        let result = try TrainingBenchmark.run(options) { step, seconds in
            steps.append(step)
            XCTAssertGreaterThan(seconds, 0)
        }
        XCTAssertEqual(steps, [0, 1, 2])
        // q: A (4, 32) + B (32, 4); v: A (4, 32) + B (16, 4) — per layer, two layers
        XCTAssertEqual(result.trainable, 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4))
        let config = options.modelConfig
        XCTAssertEqual(result.params, LlamaWeights.expectedShapes(config).reduce(0) { $0 + $1.shape.reduce(1, *) }
                       + result.trainable)
        XCTAssertGreaterThan(result.tokensPerSecond, 0)
        XCTAssertEqual(result.stepSeconds, Double(options.batch * options.seq) / result.tokensPerSecond,
                       accuracy: 1e-9 * result.stepSeconds + 1e-12)
        XCTAssertGreaterThan(result.sgemmPeakGflops, 0)
        XCTAssertGreaterThan(result.peakRSSMiB, 1)
        XCTAssertEqual(result.threads, 2)
        XCTAssertEqual(result.gflops, result.flopsPerToken * result.tokensPerSecond / 1e9, accuracy: 1e-6 * result.gflops)
        // random tokens: the loss is near ln(vocab)
        XCTAssertEqual(result.loss, log(Double(options.vocab)), accuracy: 0.5)

        let json = try result.jsonLine()
        XCTAssertFalse(json.contains("\n"))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        for key in ["tokens_per_s", "step_s", "peak_rss_mib", "gflops", "sgemm_peak_gflops", "params", "trainable",
                    "openblas_core"] {
            XCTAssertNotNil(object[key], "\(key) missing from \(json)")
        }
    }

    /// Same seed and threads: the same loss, bit for bit.
    func testTrainingBenchmarkIsDeterministic() throws {
        let a = try TrainingBenchmark.run(tinyOptions()), b = try TrainingBenchmark.run(tinyOptions())
        XCTAssertEqual(a.loss.bitPattern, b.loss.bitPattern)
    }

    /// DESIGN §5: 2 FLOPs per weight forward, 2 more per weight the gradient flows back through, 6 per adapter
    /// weight, 6·T·(H·hd) of causal attention per block.
    func testFlopsPerToken() throws {
        var options = tinyOptions()
        let model = LlamaModel(weights: LlamaWeights.random(config: options.modelConfig, seed: 1).weights)
        let d = model.dims
        let block = d.dim * d.qDim * 2 + d.dim * d.kvDim * 2 + d.dim * d.ffnDim * 3
        let frozen = Double(d.layers * block + d.vocab * d.dim)
        let all = try AdapterSet(config: LoRAConfig(r: 4, loraAlpha: 8), targets: [.q, .v], layers: [0, 1], dims: d)
        XCTAssertEqual(TrainingBenchmark.flopsPerToken(model: model, adapters: all, seqLen: options.seq),
                       4 * frozen + 6 * Double(all.trainableCount) + 6 * Double(d.layers * options.seq * d.qDim))
        // adapters on the top block only: the bottom block runs forward only
        let top = try AdapterSet(config: LoRAConfig(r: 4, loraAlpha: 8), targets: [.q], layers: [1], dims: d)
        let below = Double(block)
        XCTAssertEqual(TrainingBenchmark.flopsPerToken(model: model, adapters: top, seqLen: options.seq),
                       4 * frozen - 2 * below + 6 * Double(top.trainableCount)
                       + Double(options.seq * d.qDim) * (2 * 2 + 4 * 1))
        options.kvHeads = 0
        XCTAssertEqual(options.modelConfig.numKeyValueHeads, options.heads)
    }

    func testRefusesImpossibleConfigurations() {
        func refuses(_ change: (inout BenchmarkOptions) -> Void, _ fragment: String) {
            var o = tinyOptions()
            change(&o)
            XCTAssertThrowsError(try o.validate()) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(error) does not mention \(fragment)")
            }
        }
        refuses({ $0.dim = 30 }, "--dim 30 is not divisible by --heads 4")
        refuses({ $0.heads = 6; $0.dim = 18; $0.kvHeads = 2 }, "odd")
        refuses({ $0.kvHeads = 3 }, "--heads 4 is not divisible by --kv-heads 3")
        refuses({ $0.steps = 0 }, "--steps must be at least 1")
        refuses({ $0.warmup = -1 }, "--warmup")
        refuses({ $0.seq = 1 }, "--seq must be at least 2")
        refuses({ $0.targets = "q,w" }, "unknown target 'w'")
        refuses({ $0.vocab = 2 }, "--vocab must be at least 3")
        refuses({ $0.sgemmSizes = [64, 0] }, "--sgemm-sizes")
    }

    /// The benchmark's tokens are what `Generator.generate` picks greedily on the same model.
    func testGenerationBenchmarkGeneratesGreedily() throws {
        Threads.set(2)
        let config = tinyOptions().modelConfig
        let model = LlamaModel(weights: LlamaWeights.random(config: config, seed: 3).weights)
        let prompt = GenerationBenchmark.prompt(count: 5, vocab: config.vocabSize, bos: 1, seed: 9)
        XCTAssertEqual(prompt.count, 5)
        XCTAssertEqual(prompt[0], 1)
        XCTAssertTrue(prompt.dropFirst().allSatisfy { $0 >= 3 && Int($0) < config.vocabSize })
        let result = try GenerationBenchmark.run(model: model, prompt: prompt, newTokens: 6)
        XCTAssertEqual(result.newTokens, 6)
        XCTAssertEqual(result.tokens.count, 6)
        XCTAssertEqual(result.prompt, prompt)
        XCTAssertGreaterThan(result.tokensPerSecond, 0)
        var sampler = Sampler(temperature: 0)
        let want = try Generator(model: model, capacity: 11).generate(prompt: prompt, maxNewTokens: 6,
                                                                        sampler: &sampler, stop: nil)
        XCTAssertEqual(result.tokens, want)
        XCTAssertThrowsError(try GenerationBenchmark.run(model: model, prompt: [], newTokens: 3))
    }

    func testSavedModelIsTheBenchmarksModel() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = tinyOptions()
        options.seed = 4
        try TrainingBenchmark.saveModel(options, directory: directory)
        let loaded = try LlamaWeights.load(directory: directory)
        let random = LlamaWeights.random(config: options.modelConfig, seed: 4).weights
        XCTAssertEqual(loaded.config, options.modelConfig)
        for ((name, a), (_, b)) in zip(loaded.named, random.named) { XCTAssertEqual(a.array, b.array, name) }
    }
}
