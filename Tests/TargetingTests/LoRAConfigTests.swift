import Foundation
import MiniGPT
import Targeting
import Tensors
import XCTest

final class LoRAConfigTests: XCTestCase {
    /// The pattern fixture as PEFT wrote it: rank_pattern {"model.layers.1.self_attn.q_proj": 6, "o_proj": 2},
    /// alpha_pattern {"down_proj": 3}, r 4, alpha 8.
    func testReadsPEFTConfigWithPatterns() throws {
        let config = try LoRAConfig.load(directory: Fixtures.peft("lora-pattern"))
        XCTAssertEqual(config.peftType, "LORA")
        XCTAssertEqual(config.taskType, "CAUSAL_LM")
        XCTAssertEqual(config.r, 4)
        XCTAssertEqual(config.loraAlpha, 8)
        XCTAssertEqual(config.targetModules, .list(["gate_proj", "o_proj", "k_proj", "down_proj", "q_proj"]))
        XCTAssertNil(config.layersToTransform)
        XCTAssertEqual(config.initLoraWeights, .flag(true))
        XCTAssertEqual(config.rank(for: "model.layers.1.self_attn.q_proj"), 6)
        XCTAssertEqual(config.rank(for: "model.layers.0.self_attn.q_proj"), 4)
        XCTAssertEqual(config.rank(for: "model.layers.0.self_attn.o_proj"), 2)
        XCTAssertEqual(config.rank(for: "model.layers.1.mlp.down_proj"), 4)
        XCTAssertEqual(config.alpha(for: "model.layers.1.mlp.down_proj"), 3)
        XCTAssertEqual(config.alpha(for: "model.layers.1.self_attn.q_proj"), 8)
        XCTAssertEqual(config.scale(for: "model.layers.1.mlp.down_proj"), 0.75)
        XCTAssertEqual(config.scale(for: "model.layers.1.self_attn.q_proj"), 8.0 / 6.0)
        XCTAssertEqual(config.scale(for: "model.layers.0.self_attn.o_proj"), 4)
        let sites = try config.sites(layerCount: 2)
        XCTAssertEqual(sites.map(\.moduleName), [
            "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.o_proj",
            "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.down_proj",
            "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.o_proj",
            "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.down_proj"])
    }

    func testRsLoRAScaleAndLayers() throws {
        let config = try LoRAConfig.load(directory: Fixtures.peft("lora-all-rslora"))
        XCTAssertTrue(config.useRslora)
        XCTAssertEqual(config.layersToTransform, [1])
        XCTAssertEqual(Double(config.scale(for: "model.layers.1.mlp.up_proj")), 16 / 8.0.squareRoot(), accuracy: 1e-6)
        let sites = try config.sites(layerCount: 2)
        XCTAssertEqual(sites.count, 7)
        XCTAssertTrue(sites.allSatisfy { $0.layer == 1 })
    }

    /// PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", name).
    func testPatternMatchingFollowsPEFT() {
        let name = "model.layers.3.self_attn.q_proj"
        func matches(_ key: String) -> Bool { LoRAConfig.patternKey([key], matching: name) == key }
        XCTAssertTrue(matches("q_proj"))
        XCTAssertTrue(matches("self_attn.q_proj"))
        XCTAssertTrue(matches(name))
        XCTAssertTrue(matches("layers.3.self_attn.q_proj"))
        XCTAssertTrue(matches(#"layers\.[0-3]\.self_attn\.q_proj"#))
        XCTAssertTrue(matches(".*q_proj"))
        XCTAssertTrue(matches("(q|v)_proj"))
        XCTAssertFalse(matches("proj"))            // no dot boundary before "proj"
        XCTAssertFalse(matches("_proj"))
        XCTAssertFalse(matches("k_proj"))
        XCTAssertFalse(matches("layers.3"))        // must reach the end of the name
        XCTAssertFalse(matches("q_pro"))
        XCTAssertFalse(matches("layers.13.self_attn.q_proj"))
        XCTAssertFalse(matches("x.model.layers.3.self_attn.q_proj"))
        XCTAssertNil(LoRAConfig.patternKey(["(unclosed"], matching: name))
        // The first key in sorted order wins, as in PEFT's sorted JSON.
        XCTAssertEqual(LoRAConfig.patternKey(["q_proj", "layers.3.self_attn.q_proj"], matching: name),
                       "layers.3.self_attn.q_proj")
        let config = LoRAConfig(r: 8, rankPattern: ["layers.3.self_attn.q_proj": 2, "q_proj": 16])
        XCTAssertEqual(config.rank(for: name), 2)
        XCTAssertEqual(config.rank(for: "model.layers.2.self_attn.q_proj"), 16)
        XCTAssertEqual(config.rank(for: "model.layers.2.self_attn.v_proj"), 8)
    }

    func testRoundTripWritesSortedPEFTKeys() throws {
        let directory = try temporaryDirectory(self)
        var config = LoRAConfig(targets: [.v, .q, .down], layers: [0, 2], r: 16, loraAlpha: 32, loraDropout: 0.05,
                                useRslora: true, initLoraWeights: .method("gaussian"))
        config.rankPattern = ["o_proj": 4]
        config.alphaPattern = ["down_proj": 2.5, "q_proj": 3]
        config.baseModelNameOrPath = "models/base"
        try config.write(to: directory)
        let loaded = try LoRAConfig.load(directory: directory)
        XCTAssertEqual(loaded, config)

        let text = try String(contentsOfFile: directory + "/adapter_config.json", encoding: .utf8)
        let keys = ["alpha_pattern", "base_model_name_or_path", "bias", "inference_mode", "init_lora_weights",
                    "layers_to_transform", "lora_alpha", "lora_dropout", "peft_type", "r", "rank_pattern",
                    "target_modules", "task_type", "use_dora", "use_rslora"]
        let positions = try keys.map { key in try XCTUnwrap(text.range(of: "\"\(key)\"")?.lowerBound, key) }
        XCTAssertEqual(positions, positions.sorted(), "keys are not sorted")
        let json = try readJSON(directory + "/adapter_config.json")
        XCTAssertEqual(Set(json.keys), Set(keys))
        XCTAssertEqual(json["target_modules"] as? [String], ["q_proj", "v_proj", "down_proj"])
        XCTAssertEqual(json["layers_to_transform"] as? [Int], [0, 2])
        XCTAssertEqual(json["peft_type"] as? String, "LORA")
        XCTAssertEqual(json["task_type"] as? String, "CAUSAL_LM")
        XCTAssertEqual(json["bias"] as? String, "none")
        XCTAssertEqual(json["init_lora_weights"] as? String, "gaussian")
        XCTAssertTrue(text.contains("\"lora_alpha\" : 32,") || text.contains("\"lora_alpha\": 32,"), "alpha written as an integer")

        // Every layer: layers_to_transform is written as null (PEFT's value), not dropped.
        let all = LoRAConfig(targets: [.q], layers: nil, r: 4, loraAlpha: 8)
        try all.write(to: directory)
        let allJSON = try readJSON(directory + "/adapter_config.json")
        XCTAssertTrue(allJSON["layers_to_transform"] is NSNull)
        XCTAssertTrue(allJSON["base_model_name_or_path"] is NSNull)
        XCTAssertEqual(try LoRAConfig.load(directory: directory), all)
    }

    /// Writes a minimal valid config changed by `edit` and loads it.
    func load(_ edit: (inout [String: Any]) -> Void) throws -> LoRAConfig {
        let directory = try temporaryDirectory(self)
        var json: [String: Any] = ["peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
                                   "lora_dropout": 0.0, "target_modules": ["q_proj"], "bias": "none",
                                   "some_future_key": ["ignored": true], "peft_version": "9.9"]
        edit(&json)
        try writeJSON(json, to: directory + "/adapter_config.json")
        return try LoRAConfig.load(directory: directory)
    }

    func testFlexibleValuesAndDefaults() throws {
        let minimal = try load { _ in }
        XCTAssertEqual(minimal.targetModules, .list(["q_proj"]))
        XCTAssertFalse(minimal.useRslora)
        XCTAssertEqual(minimal.initLoraWeights, .flag(true))
        XCTAssertEqual(try load { $0["layers_to_transform"] = 1 }.layersToTransform, [1])
        XCTAssertNil(try load { $0["layers_to_transform"] = [Int]() }.layersToTransform)
        XCTAssertNil(try load { $0["layers_to_transform"] = NSNull() }.layersToTransform)
        XCTAssertEqual(try load { $0["init_lora_weights"] = "gaussian" }.initialization(), .gaussian)
        XCTAssertEqual(try load { $0["init_lora_weights"] = false }.initialization(), .random)
        XCTAssertEqual(try load { $0["lora_alpha"] = 12.5 }.loraAlpha, 12.5)
        // A string naming one module is accepted (as one list entry), and PEFT's all-linear.
        let single = try load { $0["target_modules"] = "v_proj" }
        XCTAssertEqual(try single.sites(layerCount: 2).map(\.moduleName),
                       ["model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"])
        XCTAssertEqual(try load { $0["target_modules"] = "all-linear" }.sites(layerCount: 1).count, 7)
        // Entries matching a dotted suffix, and full module names, as PEFT.
        let suffix = try load { $0["target_modules"] = ["mlp.up_proj", "model.layers.1.self_attn.k_proj"] }
        XCTAssertEqual(try suffix.sites(layerCount: 2).map(\.moduleName),
                       ["model.layers.0.mlp.up_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.mlp.up_proj"])
        // Features set to their "off" value are fine.
        _ = try load {
            $0["modules_to_save"] = NSNull(); $0["lora_bias"] = false; $0["exclude_modules"] = NSNull()
            $0["layers_pattern"] = NSNull(); $0["loftq_config"] = [String: Any](); $0["fan_in_fan_out"] = false
        }
    }

    func testBadConfigsAreErrors() throws {
        assertError(["adapter_config.json", "peft_type is \"IA3\"", "LORA"]) { try load { $0["peft_type"] = "IA3" } }
        assertError(["adapter_config.json", "no peft_type"]) { try load { $0["peft_type"] = nil } }
        assertError(["r is 0"]) { try load { $0["r"] = 0 } }
        assertError(["lora_alpha is -1"]) { try load { $0["lora_alpha"] = -1 } }
        assertError(["lora_dropout is 1", "[0, 1)"]) { try load { $0["lora_dropout"] = 1.0 } }
        assertError(["lora_dropout is -0.1"]) { try load { $0["lora_dropout"] = -0.1 } }
        assertError(["bias is \"all\""]) { try load { $0["bias"] = "all" } }
        assertError(["regular expression", "not supported"]) { try load { $0["target_modules"] = #".*\.(q|v)_proj"# } }
        assertError(["target_modules is empty"]) { try load { $0["target_modules"] = [String]() } }
        assertError(["no target_modules"]) { try load { $0["target_modules"] = nil } }
        assertError(["target_modules", "wrong type"]) { try load { $0["target_modules"] = 3 } }
        assertError(["rank_pattern", "o_proj", "rank 0"]) { try load { $0["rank_pattern"] = ["o_proj": 0] } }
        assertError(["rank_pattern key '(q'", "regular expression"]) { try load { $0["rank_pattern"] = ["(q": 2] } }
        assertError(["alpha_pattern", "alpha 0"]) { try load { $0["alpha_pattern"] = ["o_proj": 0] } }
        assertError(["init_lora_weights is \"pissa\"", "path_initial_model_for_weight_conversion"]) { try load { $0["init_lora_weights"] = "pissa" } }
        assertError(["init_lora_weights \"olora\" is not supported"]) { try load { $0["init_lora_weights"] = "olora" } }
        assertError(["modules_to_save", "not supported"]) { try load { $0["modules_to_save"] = ["lm_head"] } }
        assertError(["lora_bias"]) { try load { $0["lora_bias"] = true } }
        assertError(["exclude_modules"]) { try load { $0["exclude_modules"] = ["k_proj"] } }
        assertError(["layers_pattern"]) { try load { $0["layers_pattern"] = "h" } }
        assertError(["layers_to_transform lists -2"]) { try load { $0["layers_to_transform"] = [-2] } }
        assertError(["r", "wrong type"]) { try load { $0["r"] = "four" } }

        let directory = try temporaryDirectory(self)
        assertError([directory + "/adapter_config.json", "does not exist"]) { try LoRAConfig.load(directory: directory) }
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: directory + "/adapter_config.json"))
        assertError([directory + "/adapter_config.json", "not valid JSON"]) { try LoRAConfig.load(directory: directory) }
        try Data("[1, 2]".utf8).write(to: URL(fileURLWithPath: directory + "/adapter_config.json"))
        assertError([directory + "/adapter_config.json"]) { try LoRAConfig.load(directory: directory) }
    }

    func testTargetsMustExistInTheBase() throws {
        let layerFive = try load { $0["layers_to_transform"] = [5] }
        assertError(["layers_to_transform lists layer 5", "2 layers (0-1)"]) { try layerFive.sites(layerCount: 2) }
        let unknown = try load { $0["target_modules"] = ["q_proj", "c_attn"] }
        assertError(["target_modules entry 'c_attn' matches no module"]) { try unknown.sites(layerCount: 2) }
        let head = try load { $0["target_modules"] = ["lm_head"] }
        assertError(["'lm_head' matches no module"]) { try head.sites(layerCount: 2) }
        let missingLayer = try load { $0["target_modules"] = ["model.layers.4.self_attn.q_proj"] }
        assertError(["matches no module", "2 layers"]) { try missingLayer.sites(layerCount: 2) }
    }
}
