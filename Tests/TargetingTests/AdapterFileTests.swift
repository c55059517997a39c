import Checkpoints
import Foundation
import MiniGPT
import Targeting
import Tensors
import XCTest

/// PEFT adapter directories: save → load round trips and every way a directory can be wrong.
final class AdapterFileTests: XCTestCase {
    /// A saved adapter (random A and B on q, v, down of every layer) for the gqa fixture's dimensions.
    func savedAdapter(r: Int = 4, dims: ModelDimensions? = nil) throws -> (directory: String, set: AdapterSet) {
        let directory = try temporaryDirectory(self) + "/adapter"
        let dims = try dims ?? gqaDims()
        let set = try AdapterSet(config: LoRAConfig(r: r, loraAlpha: 8, loraDropout: 0.1), targets: [.q, .v, .down],
                                 layers: Array(0..<dims.layers), dims: dims, initialization: .random, seed: 3)
        try set.save(to: directory, baseModelPath: "Tests/Fixtures/models/gqa")
        return (directory, set)
    }

    func testSaveLoadRoundTripIsBitExact() throws {
        let dims = try gqaDims()
        let (directory, set) = try savedAdapter()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(),
                       ["adapter_config.json", "adapter_model.safetensors"])
        let loaded = try AdapterSet.load(directory: directory, dims: dims)
        XCTAssertEqual(loaded.parameters.count, set.parameters.count)
        XCTAssertEqual(loaded.parameters.array.map(\.bitPattern), set.parameters.array.map(\.bitPattern))
        XCTAssertEqual(loaded.adapters.map(\.site), set.adapters.map(\.site))
        XCTAssertEqual(loaded.adapters.map(\.scale), set.adapters.map(\.scale))
        XCTAssertEqual(loaded.adapters.map(\.dropout), set.adapters.map(\.dropout))
        XCTAssertEqual(loaded.config.baseModelNameOrPath, "Tests/Fixtures/models/gqa")
        XCTAssertTrue(loaded.config.inferenceMode)
        var expectedConfig = set.config
        expectedConfig.inferenceMode = true
        expectedConfig.baseModelNameOrPath = "Tests/Fixtures/models/gqa"
        XCTAssertEqual(loaded.config, expectedConfig)

        // PEFT's file layout: F32 tensors under PEFT's names, metadata {"format": "pt"}.
        let file = try SafeTensorsFile(path: directory + "/adapter_model.safetensors")
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(file.info("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")?.shape, [4, 48])
        XCTAssertEqual(file.info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")?.shape, [32, 4])
        XCTAssertEqual(file.info("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")?.dtype, .f32)
        XCTAssertEqual(file.names.count, 12)

        // Saving again into the existing directory replaces the files.
        loaded.parameters[0] = 42
        try loaded.save(to: directory)
        XCTAssertEqual(try AdapterSet.load(directory: directory, dims: dims).parameters[0], 42)
        XCTAssertEqual(try LoRAConfig.load(directory: directory).baseModelNameOrPath, "Tests/Fixtures/models/gqa")
    }

    /// A committed PEFT adapter saved again by LoRAKit holds the same tensors and the same settings.
    func testPEFTFixtureResavesIdentically() throws {
        let dims = try gqaDims()
        let source = Fixtures.peft("lora-pattern")
        let set = try AdapterSet.load(directory: source, dims: dims)
        let directory = try temporaryDirectory(self) + "/copy"
        try set.save(to: directory)
        let original = try SafeTensorsFile(path: source + "/adapter_model.safetensors")
        let copy = try SafeTensorsFile(path: directory + "/adapter_model.safetensors")
        XCTAssertEqual(copy.names, original.names)
        for name in original.names {
            let a = try original.tensor(name), b = try copy.tensor(name)
            XCTAssertEqual(a.shape, b.shape, name)
            XCTAssertEqual(a.array.map(\.bitPattern), b.array.map(\.bitPattern), name)
        }
        let json = try readJSON(directory + "/adapter_config.json")
        let peftJSON = try readJSON(source + "/adapter_config.json")
        for key in ["r", "lora_alpha", "peft_type", "task_type", "bias", "use_rslora", "use_dora", "inference_mode",
                    "base_model_name_or_path"] {
            XCTAssertEqual(json[key] as? NSObject, peftJSON[key] as? NSObject, key)
        }
        XCTAssertEqual(json["rank_pattern"] as? [String: Int], peftJSON["rank_pattern"] as? [String: Int])
        XCTAssertEqual(json["alpha_pattern"] as? [String: Double], peftJSON["alpha_pattern"] as? [String: Double])
        XCTAssertEqual(Set(json["target_modules"] as? [String] ?? []), Set(peftJSON["target_modules"] as? [String] ?? []))
    }

    /// Rewrites the saved safetensors with `edit` applied to its (name, tensor) list.
    func rewriteTensors(_ directory: String, _ edit: (inout [(name: String, tensor: Tensor)]) -> Void) throws {
        let path = directory + "/adapter_model.safetensors"
        let file = try SafeTensorsFile(path: path)
        var tensors = try file.names.map { (name: $0, tensor: try file.tensor($0).clone()) }
        edit(&tensors)
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path)
    }

    func rewriteConfig(_ directory: String, _ edit: (inout [String: Any]) -> Void) throws {
        var json = try readJSON(directory + "/adapter_config.json")
        edit(&json)
        try writeJSON(json, to: directory + "/adapter_config.json")
    }

    func testShapesThatDoNotFitTheBaseAreRefused() throws {
        // Built for a model with hidden 64: q_proj's A is [4, 64], gqa needs [4, 32].
        var wide = try gqaDims()
        wide.dim = 64
        let (directory, _) = try savedAdapter(dims: wide)
        assertError(["adapter_model.safetensors: tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [4, 64], the base needs [4, 32]"]) {
            try AdapterSet.load(directory: directory, dims: try gqaDims())
        }
    }

    func testRankThatDisagreesWithTheConfigIsRefused() throws {
        let (directory, _) = try savedAdapter(r: 8)
        try rewriteConfig(directory) { $0["r"] = 4 }
        assertError(["q_proj.lora_A.weight has rank 8", "r = 4"]) {
            try AdapterSet.load(directory: directory, dims: try gqaDims())
        }
        try rewriteConfig(directory) { $0["r"] = 8; $0["rank_pattern"] = ["down_proj": 2] }
        assertError(["layers.0.mlp.down_proj.lora_A.weight has rank 8", "model.layers.0.mlp.down_proj r = 2"]) {
            try AdapterSet.load(directory: directory, dims: try gqaDims())
        }
    }

    func testTargetsTheBaseDoesNotHaveAreRefused() throws {
        let (directory, _) = try savedAdapter()
        try rewriteConfig(directory) { $0["layers_to_transform"] = [5] }
        assertError(["adapter_config.json", "layers_to_transform lists layer 5", "2 layers"]) {
            try AdapterSet.load(directory: directory, dims: try gqaDims())
        }
        try rewriteConfig(directory) { $0["layers_to_transform"] = NSNull(); $0["target_modules"] = ["q_proj", "wq"] }
        assertError(["adapter_config.json", "'wq' matches no module"]) {
            try AdapterSet.load(directory: directory, dims: try gqaDims())
        }
    }

    func testMissingAndExtraTensorsAreRefused() throws {
        let dims = try gqaDims()
        let (directory, _) = try savedAdapter()
        let dropped = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
        try rewriteTensors(directory) { $0.removeAll { $0.name == dropped } }
        assertError(["has no tensor \(dropped)", "model.layers.1.self_attn.v_proj"]) {
            try AdapterSet.load(directory: directory, dims: dims)
        }

        let (second, _) = try savedAdapter()
        try rewriteTensors(second) {
            $0.append((name: "base_model.model.model.embed_tokens.lora_embedding_A", tensor: Tensor(shape: [4, 320])))
            $0.append((name: "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", tensor: Tensor(shape: [32])))
        }
        assertError(["tensors LoRAKit does not use", "base_model.model.model.embed_tokens.lora_embedding_A",
                     "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias"]) {
            try AdapterSet.load(directory: second, dims: dims)
        }

        // Tensors of a module the config does not target are unused too.
        let (third, _) = try savedAdapter()
        try rewriteConfig(third) { $0["target_modules"] = ["q_proj", "v_proj"] }
        assertError(["does not use", "mlp.down_proj.lora_A.weight"]) { try AdapterSet.load(directory: third, dims: dims) }

        let (fourth, _) = try savedAdapter()
        try rewriteTensors(fourth) { tensors in tensors[3].tensor[2] = .nan }
        assertError(["non-finite value", "index 2"]) { try AdapterSet.load(directory: fourth, dims: dims) }
    }

    func testMissingFilesAreClearErrors() throws {
        let dims = try gqaDims()
        let root = try temporaryDirectory(self)
        assertError([root + "/nothing", "adapter directory does not exist"]) {
            try AdapterSet.load(directory: root + "/nothing", dims: dims)
        }
        try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/file"))
        assertError(["is a file"]) { try AdapterSet.load(directory: root + "/file", dims: dims) }
        let (directory, _) = try savedAdapter()
        try FileManager.default.removeItem(atPath: directory + "/adapter_model.safetensors")
        assertError([directory + "/adapter_model.safetensors", "does not exist"]) {
            try AdapterSet.load(directory: directory, dims: dims)
        }
        try Data("pickle".utf8).write(to: URL(fileURLWithPath: directory + "/adapter_model.bin"))
        assertError(["adapter_model.bin", "safetensors"]) { try AdapterSet.load(directory: directory, dims: dims) }
        try FileManager.default.removeItem(atPath: directory + "/adapter_config.json")
        assertError([directory + "/adapter_config.json", "does not exist"]) {
            try AdapterSet.load(directory: directory, dims: dims)
        }
        let (corrupt, _) = try savedAdapter()
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: corrupt + "/adapter_model.safetensors"))
        assertError([corrupt + "/adapter_model.safetensors"]) { try AdapterSet.load(directory: corrupt, dims: dims) }
    }

    /// Two sets on one model add up; a multiplier scales a set's output.
    func testSeveralSetsAndMultipliers() throws {
        Threads.set(1)
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let (directory, _) = try savedAdapter()
        let batch = TokenBatch(sequences: [[1, 40, 7, 99, 250, 3]])

        let whole = LlamaModel(weights: weights)
        try AdapterSet.load(directory: directory, dims: weights.dims).attach(to: whole)
        let full = try whole.logits(batch)

        let halves = LlamaModel(weights: weights)
        for _ in 0..<2 {
            let half = try AdapterSet.load(directory: directory, dims: weights.dims)
            half.multiplier = 0.5
            try half.attach(to: halves)
        }
        let summed = try halves.logits(batch)
        let difference = maxAbsDifference(full.data, summed.data, count: full.count)
        XCTAssertLessThan(difference, 1e-5)

        let base = try LlamaModel(weights: weights).logits(batch)
        XCTAssertGreaterThan(maxAbsDifference(full.data, base.data, count: full.count), 1e-2, "the adapter changes nothing")
        let off = LlamaModel(weights: weights)
        let zero = try AdapterSet.load(directory: directory, dims: weights.dims)
        zero.multiplier = 0
        try zero.attach(to: off)
        XCTAssertEqual(try off.logits(batch).array, base.array)
    }

    func testAdapterArgument() throws {
        XCTAssertTrue(try AdapterSet.parseAdapterArgument("out/run1") == ("out/run1", 1))
        XCTAssertTrue(try AdapterSet.parseAdapterArgument("out/run1:0.5") == ("out/run1", 0.5))
        XCTAssertTrue(try AdapterSet.parseAdapterArgument("a:b/c") == ("a:b/c", 1))
        XCTAssertTrue(try AdapterSet.parseAdapterArgument("dir:-1") == ("dir", -1))
        assertError(["no directory"]) { try AdapterSet.parseAdapterArgument(":0.5") }
        assertError(["not a finite number"]) { try AdapterSet.parseAdapterArgument("dir:inf") }
    }

    func testDropoutStatesRestore() throws {
        let (directory, _) = try savedAdapter()
        let set = try AdapterSet.load(directory: directory, dims: try gqaDims(), seed: 9)
        let states = set.dropoutStates
        XCTAssertEqual(states.count, set.adapters.count)
        XCTAssertEqual(Set(states.map(\.state)).count, states.count, "every adapter has its own stream")
        try set.restoreDropoutStates(states)
        assertError(["2 dropout generator states", "6 modules"]) { try set.restoreDropoutStates(Array(states.prefix(2))) }
    }
}
