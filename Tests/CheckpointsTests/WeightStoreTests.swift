import Foundation
import XCTest
import Tensors
@testable import Checkpoints

final class WeightStoreTests: TemporaryDirectoryTestCase {
    private func writeIndex(_ weightMap: [String: String]) throws {
        let json = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": weightMap])
        try json.write(to: URL(fileURLWithPath: path(WeightStore.indexFileName)))
    }

    func testSingleFile() throws {
        try SafeTensorsWriter.write([("model.norm.weight", Tensor(shape: [3], values: [1, 2, 3])),
                                     ("model.embed_tokens.weight", Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]))],
                                    metadata: ["format": "pt"], to: path("model.safetensors"))
        let store = try WeightStore(directory: directory)
        XCTAssertEqual(store.names, ["model.embed_tokens.weight", "model.norm.weight"])
        XCTAssertTrue(store.contains("model.norm.weight"))
        XCTAssertFalse(store.contains("lm_head.weight"))
        XCTAssertEqual(try store.tensor("model.embed_tokens.weight", shape: [2, 3]).array, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(store.info("model.norm.weight")?.shape, [3])
        assertError(["\(directory)/model.safetensors: tensor model.embed_tokens.weight has shape [2, 3], the config says [3, 2]"]) {
            _ = try store.tensor("model.embed_tokens.weight", shape: [3, 2])
        }
        assertError(["\(directory): missing tensor lm_head.weight"]) { _ = try store.tensor("lm_head.weight", shape: [2, 3]) }
    }

    func testShardedIndexOpensEachShardOnce() throws {
        try SafeTensorsWriter.write([("a", Tensor(shape: [2], values: [1, 2])), ("b", Tensor(shape: [1], values: [3]))],
                                    metadata: [:], to: path("model-00001-of-00002.safetensors"))
        try SafeTensorsWriter.write([("c", Tensor(shape: [2], values: [4, 5]))], dtype: .bf16,
                                    metadata: [:], to: path("model-00002-of-00002.safetensors"))
        try writeIndex(["a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                        "c": "model-00002-of-00002.safetensors"])
        let store = try WeightStore(directory: directory + "/")
        XCTAssertEqual(store.names, ["a", "b", "c"])
        XCTAssertEqual(store.files.keys.sorted(), ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        XCTAssertEqual(try store.tensor("a", shape: [2]).array, [1, 2])
        XCTAssertEqual(try store.tensor("b", shape: [1]).array, [3])
        XCTAssertEqual(try store.tensor("c", shape: [2]).array, [4, 5])
        XCTAssertEqual(store.info("c")?.dtype, .bf16)
        assertError(["\(directory)/model-00002-of-00002.safetensors: tensor c has shape [2], the config says [1, 2]"]) {
            _ = try store.tensor("c", shape: [1, 2])
        }
    }

    func testMissingShard() throws {
        try SafeTensorsWriter.write([("a", Tensor(shape: [1]))], metadata: [:], to: path("model-00001-of-00002.safetensors"))
        try writeIndex(["a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"])
        assertError([WeightStore.indexFileName, "shard model-00002-of-00002.safetensors (holding b) does not exist"]) {
            _ = try WeightStore(directory: directory)
        }
    }

    func testIndexEntryWhoseShardLacksTheTensor() throws {
        try SafeTensorsWriter.write([("a", Tensor(shape: [1]))], metadata: [:], to: path("shard.safetensors"))
        try writeIndex(["a": "shard.safetensors", "ghost": "shard.safetensors"])
        assertError([WeightStore.indexFileName, "tensor ghost in shard.safetensors, but shard.safetensors has no such tensor"]) {
            _ = try WeightStore(directory: directory)
        }
    }

    func testBadIndexFiles() throws {
        let index = path(WeightStore.indexFileName)
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: index))
        assertError([index, "not valid JSON"]) { _ = try WeightStore(directory: directory) }
        try Data(#"{"metadata": {}}"#.utf8).write(to: URL(fileURLWithPath: index))
        assertError([index, "no weight_map"]) { _ = try WeightStore(directory: directory) }
        try Data(#"{"weight_map": {}}"#.utf8).write(to: URL(fileURLWithPath: index))
        assertError([index, "empty weight_map"]) { _ = try WeightStore(directory: directory) }
        try Data(#"{"weight_map": {"a": 3}}"#.utf8).write(to: URL(fileURLWithPath: index))
        assertError([index, "entry a is not a file name"]) { _ = try WeightStore(directory: directory) }
        try writeIndex(["a": "../outside.safetensors"])
        assertError([index, "entry a points outside the model directory"]) { _ = try WeightStore(directory: directory) }
    }

    func testCorruptShardNamesTheShard() throws {
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path("bad.safetensors")))
        try writeIndex(["a": "bad.safetensors"])
        assertError(["\(directory)/bad.safetensors", "too short"]) { _ = try WeightStore(directory: directory) }
    }

    func testNeitherLayout() throws {
        assertError(["\(directory): no model.safetensors or model.safetensors.index.json"]) {
            _ = try WeightStore(directory: directory)
        }
    }
}
