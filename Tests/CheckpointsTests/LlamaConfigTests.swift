import Foundation
import XCTest
import Tensors
@testable import Checkpoints

final class LlamaConfigTests: TemporaryDirectoryTestCase {
    private func load(_ json: String) throws -> LlamaConfig {
        let file = path("config.json")
        try Data(json.utf8).write(to: URL(fileURLWithPath: file))
        return try LlamaConfig.load(from: file)
    }

    private func assertConfigError(_ json: String, _ fragment: String, line: UInt = #line) {
        assertError([path("config.json") + ": ", fragment], line: line) { _ = try self.load(json) }
    }

    private let minimal = #""vocab_size": 32, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4"#

    func testDefaults() throws {
        let config = try load("{\(minimal)}")
        XCTAssertEqual(config, LlamaConfig(vocabSize: 32, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2,
                                           numAttentionHeads: 4, numKeyValueHeads: 4, headDim: 16, rmsNormEps: 1e-6,
                                           maxPositionEmbeddings: 2048, tieWordEmbeddings: false, bosTokenId: 1,
                                           eosTokenId: 2, padTokenId: nil, ropeTheta: 10000, modelType: "llama"))
        XCTAssertEqual(config.numKeyValueHeads, 4)
        XCTAssertEqual(config.headDim, 16)
        XCTAssertEqual(config.qDim, 64)
        XCTAssertEqual(config.kvDim, 64)
    }

    func testTinyLlamaStyleConfig() throws {
        let config = try load("""
        {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
         "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
         "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32,
         "num_hidden_layers": 22, "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
         "rope_scaling": null, "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
         "transformers_version": "4.35.0", "use_cache": true, "vocab_size": 32000}
        """)
        XCTAssertEqual(config.numKeyValueHeads, 4)
        XCTAssertEqual(config.headDim, 64)
        XCTAssertEqual(config.qDim, 2048)
        XCTAssertEqual(config.kvDim, 256)
        XCTAssertEqual(config.rmsNormEps, 1e-5)
        XCTAssertEqual(config.ropeTheta, 10000)
        XCTAssertEqual(config.vocabSize, 32000)
    }

    func testBothRopeSpellings() throws {
        XCTAssertEqual(try load("{\(minimal), \"rope_theta\": 500000.0}").ropeTheta, 500000)
        XCTAssertEqual(try load("{\(minimal), \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}}").ropeTheta, 1_000_000)
        XCTAssertEqual(try load("{\(minimal), \"rope_parameters\": {\"rope_theta\": 250000}}").ropeTheta, 250000)
        XCTAssertEqual(try load("{\(minimal), \"rope_scaling\": {\"rope_type\": \"default\"}, \"rope_theta\": 20000}").ropeTheta, 20000)
    }

    func testHeadDimAndKeyValueHeads() throws {
        // head_dim given explicitly need not be hidden / heads.
        let config = try load(#"{"vocab_size": 32, "hidden_size": 100, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}"#)
        XCTAssertEqual(config.headDim, 32)
        XCTAssertEqual(config.qDim, 128)
        XCTAssertEqual(config.kvDim, 64)
        XCTAssertEqual(try load("{\(minimal), \"head_dim\": null}").headDim, 16)
    }

    func testTokenIds() throws {
        let config = try load("{\(minimal), \"eos_token_id\": [3, 7], \"bos_token_id\": 0, \"pad_token_id\": 5}")
        XCTAssertEqual(config.eosTokenId, 3)
        XCTAssertEqual(config.bosTokenId, 0)
        XCTAssertEqual(config.padTokenId, 5)
        XCTAssertNil(try load("{\(minimal), \"pad_token_id\": null}").padTokenId)
        assertConfigError("{\(minimal), \"eos_token_id\": []}", "eos_token_id is an empty list")
        assertConfigError("{\(minimal), \"eos_token_id\": 99}", "eos_token_id 99 is outside the vocabulary")
    }

    func testMalformedFiles() throws {
        assertConfigError("{\"vocab_size\": 32,", "is not valid JSON")
        assertConfigError("[1, 2]", "is not a JSON object")
        assertError([path("absent.json"), "cannot read"]) { _ = try LlamaConfig.load(from: self.path("absent.json")) }
    }

    func testUnsupportedModels() throws {
        assertConfigError("{\(minimal), \"model_type\": \"gpt2\"}", "model_type is \"gpt2\"")
        assertConfigError("{\(minimal), \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", "unsupported rope scaling linear")
        assertConfigError("{\(minimal), \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}", "unsupported rope scaling llama3")
        assertConfigError("{\(minimal), \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 10000}}", "unsupported rope scaling yarn")
        assertConfigError("{\(minimal), \"hidden_act\": \"gelu\"}", "hidden_act is \"gelu\"")
        assertConfigError("{\(minimal), \"attention_bias\": true}", "attention_bias is true")
    }

    func testMissingAndInvalidSizes() throws {
        for key in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"] {
            let without = minimal.split(separator: ",").filter { !$0.contains("\"\(key)\"") }.joined(separator: ",")
            assertConfigError("{\(without)}", "missing required key \(key)")
        }
        assertConfigError(#"{"vocab_size": 0, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}"#,
                          "vocab_size is 0, expected a positive integer")
        assertConfigError("{\(minimal), \"num_key_value_heads\": -1}", "num_key_value_heads is -1")
        assertConfigError("{\(minimal), \"num_key_value_heads\": 3}", "num_attention_heads 4 is not divisible by num_key_value_heads 3")
        assertConfigError(#"{"vocab_size": 32, "hidden_size": 66, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}"#,
                          "hidden_size 66 is not divisible by num_attention_heads 4")
        assertConfigError(#"{"vocab_size": 32, "hidden_size": "64", "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}"#,
                          "key hidden_size has the wrong type")
        assertConfigError("{\(minimal), \"rms_norm_eps\": 0}", "rms_norm_eps is 0.0")
    }

    func testWriteThenLoadRoundTripsAndSpeaksTransformers() throws {
        let config = LlamaConfig(vocabSize: 320, hiddenSize: 48, intermediateSize: 96, numHiddenLayers: 3,
                                 numAttentionHeads: 6, numKeyValueHeads: 2, rmsNormEps: 1e-5,
                                 maxPositionEmbeddings: 256, tieWordEmbeddings: true, bosTokenId: 1, eosTokenId: 2,
                                 padTokenId: 0, ropeTheta: 500000)
        let file = path("written.json")
        try config.write(to: file)
        XCTAssertEqual(try LlamaConfig.load(from: file), config)
        XCTAssertEqual(try listing(), ["written.json"])

        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(object["model_type"] as? String, "llama")
        XCTAssertEqual(object["architectures"] as? [String], ["LlamaForCausalLM"])
        XCTAssertEqual(object["torch_dtype"] as? String, "float32")
        XCTAssertEqual(object["rope_theta"] as? Double, 500000)
        XCTAssertEqual(object["head_dim"] as? Int, 8)
        XCTAssertEqual(object["num_key_value_heads"] as? Int, 2)
        XCTAssertEqual(object["tie_word_embeddings"] as? Bool, true)
        // Keys appear in sorted order in the text.
        let text = String(decoding: data, as: UTF8.self)
        let keys = object.keys.sorted()
        let positions = keys.map { text.range(of: "\"\($0)\"")!.lowerBound }
        XCTAssertEqual(positions, positions.sorted())
    }

    func testValidateCatchesBadMemberwiseConfigs() {
        let config = LlamaConfig(vocabSize: 10, hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 1,
                                 numAttentionHeads: 2, numKeyValueHeads: 3)
        XCTAssertThrowsError(try config.validate())
        XCTAssertNoThrow(try LlamaConfig(vocabSize: 10, hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 1,
                                         numAttentionHeads: 2).validate())
    }
}
