import Checkpoints
import Foundation
import MiniGPT
@testable import Targeting
import Tensors
import XCTest

extension Fixtures {
    /// Tests/Fixtures/export (scripts/make_export_fixtures.py).
    static func export(_ name: String) -> String { root.appendingPathComponent("export/\(name)").path }
}

/// Merging against PEFT's `merge_and_unload`, and the GGUF exports against llama.cpp's own converters and runtime
/// (fixtures from scripts/make_export_fixtures.py).
final class MergeExportTests: XCTestCase {
    override func setUp() { Threads.set(1) }

    func load(_ adapters: [String], weights: LlamaWeights) throws -> [AdapterSet] {
        try adapters.map { try AdapterSet.load(directory: Fixtures.peft($0), dims: weights.dims) }
    }

    func logits(_ weights: LlamaWeights, _ ids: [Int32]) throws -> Tensor {
        try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
    }

    // MARK: merge arithmetic vs PEFT

    func testMergedWeightsGivePEFTMergeAndUnloadLogits() throws {
        let base = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let expected = try SafeTensorsFile(path: Fixtures.export("merge.safetensors"))
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        for (adapters, key) in [(["lora-qv"], "logits_qv"), (["lora-all-rslora", "lora-pattern"], "logits_rslora_pattern")] {
            let merged = try AdapterMerge.merge(base: base, adapters: try load(adapters, weights: base))
            let want = try expected.tensor(key)
            let got = try logits(merged, ids)
            let difference = maxAbsDifference(got.data, want.data, count: want.count)
            print("merge \(adapters): max |logits - PEFT merge_and_unload| = \(difference)")
            XCTAssertLessThan(difference, 1e-4, key)
            // The adapters matter: the base alone is far from PEFT's merged model.
            let baseLogits = try logits(base, ids)   // bound first: the tensor must outlive the pointer read
            XCTAssertGreaterThan(maxAbsDifference(baseLogits.data, want.data, count: want.count), 0.1)
        }
    }

    func testMergeSharesUntouchedTensorsAndWeightsAdapters() throws {
        let base = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try load(["lora-qv"], weights: base)[0]
        set.multiplier = 0.5
        let merged = try AdapterMerge.merge(base: base, adapters: [set])
        XCTAssertTrue(merged.layers[0].k === base.layers[0].k, "an unadapted projection is shared, not copied")
        XCTAssertTrue(merged.embedding === base.embedding)
        XCTAssertFalse(merged.layers[0].q === base.layers[0].q)
        let delta = try XCTUnwrap(set.deltaWeight(layer: 1, projection: .v))
        for i in 0..<delta.count {
            XCTAssertEqual(merged.layers[1].v[i], base.layers[1].v[i] + delta[i], accuracy: 1e-6)
        }
        // base+adapter ×0.5 and the merged model agree.
        let check = try AdapterMerge.logitDifference(base: base, adapters: [set], merged: merged,
                                                     tokens: AdapterMerge.checkTokens(base.config))
        XCTAssertLessThan(check.maxDifference, 1e-5)
        XCTAssertGreaterThan(check.maxLogit, 0.5)
    }

    func testMergeRefusesEmptyAndForeignAdapters() throws {
        let base = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        assertError(["no adapter"]) { try AdapterMerge.merge(base: base, adapters: []) }
        let untrained = try AdapterSet(config: LoRAConfig(r: 2, loraAlpha: 4), dims: base.dims)
        assertError(["adapter 1", "every lora_B is zero"]) { try AdapterMerge.merge(base: base, adapters: [untrained]) }
        // lora-qv was made for gqa (hidden 32); tied has hidden 24.
        let tied = try LlamaWeights.load(directory: Fixtures.model("tied"))
        assertError(["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "[4, 32]", "[4, 24]"]) {
            try AdapterSet.load(directory: Fixtures.peft("lora-qv"), dims: tied.dims)
        }
    }

    // MARK: RoPE row order

    /// llama.cpp's interleaved RoPE on the permuted rows gives what Hugging Face's rotate-half RoPE gives on the
    /// original rows, after mapping each output back: the reason the converter permutes q and k.
    func testPermutedRowsMakeInterleavedRoPEEqualRotateHalf() {
        let heads = 2, headDim = 8, cols = 3, rows = heads * headDim
        var rng = RandomGenerator(seed: 3)
        let w = Tensor(shape: [rows, cols])
        rng.fillNormal(w.data, count: w.count, std: 1)
        let x: [Float] = [0.3, -1.2, 0.7], position: Float = 5
        func project(_ m: Tensor) -> [Float] {
            (0..<rows).map { r in (0..<cols).reduce(Float(0)) { $0 + m[r * cols + $1] * x[$1] } }
        }
        let half = headDim / 2
        func angle(_ i: Int) -> Float { position * Float(pow(10000.0, -2.0 * Double(i) / Double(headDim))) }
        // Hugging Face: pairs (i, i + hd/2).
        var hf = project(w)
        for h in 0..<heads {
            for i in 0..<half {
                let a = hf[h * headDim + i], b = hf[h * headDim + i + half], t = angle(i)
                hf[h * headDim + i] = a * cos(t) - b * sin(t)
                hf[h * headDim + i + half] = b * cos(t) + a * sin(t)
            }
        }
        // llama.cpp (LLAMA_ROPE_TYPE_NORM): pairs (2i, 2i+1), on the permuted weight.
        let permuted = LlamaGGUF.permuteRoPERows(w, heads: heads)
        var cpp = project(permuted)
        for h in 0..<heads {
            for i in 0..<half {
                let a = cpp[h * headDim + 2 * i], b = cpp[h * headDim + 2 * i + 1], t = angle(i)
                cpp[h * headDim + 2 * i] = a * cos(t) - b * sin(t)
                cpp[h * headDim + 2 * i + 1] = b * cos(t) + a * sin(t)
            }
        }
        let back = LlamaGGUF.permuteRoPERows(Tensor(shape: [rows, 1], values: cpp), heads: heads, inverse: true)
        for r in 0..<rows { XCTAssertEqual(back[r], hf[r], accuracy: 1e-5) }
        let roundTrip = LlamaGGUF.permuteRoPERows(permuted, heads: heads, inverse: true)
        XCTAssertEqual(roundTrip.array, w.array)
        XCTAssertNotEqual(permuted.array, w.array)
    }

    // MARK: exports vs llama.cpp's converters

    func testHFExportReadsBackAsPEFTMergedModel() throws {
        let out = try temporaryDirectory(self) + "/merged"
        let report = try ModelExport.merge(base: Fixtures.model("gqa"), adapterArguments: [Fixtures.peft("lora-qv")],
                                           out: out, format: .hf)
        XCTAssertEqual(report.mergedProjections, 4)
        XCTAssertLessThan(report.maxDifference, 1e-4)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: out)),
                       ["config.json", "model.safetensors", "tokenizer.model", "generation_config.json"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/tokenizer.model")),
                       try Data(contentsOf: URL(fileURLWithPath: Fixtures.model("gqa") + "/tokenizer.model")))
        let expected = try SafeTensorsFile(path: Fixtures.export("merge.safetensors"))
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits_qv")
        let got = try logits(try LlamaWeights.load(directory: out), ids)
        XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-4)
        XCTAssertEqual(try readJSON(out + "/config.json")["torch_dtype"] as? String, "float32")
    }

    func testHalfPrecisionHFExportIsRoundedAndLabelled() throws {
        let out = try temporaryDirectory(self) + "/merged16"
        let report = try ModelExport.merge(base: Fixtures.model("gqa"), adapterArguments: [Fixtures.peft("lora-qv")],
                                           out: out, format: .hf, dtype: .bf16)
        XCTAssertGreaterThan(report.maxDifference, 0, "BF16 rounding shows in the self-check")
        XCTAssertLessThan(report.maxDifference, 0.2)
        XCTAssertEqual(try SafeTensorsFile(path: out + "/model.safetensors").info("model.norm.weight")?.dtype, .bf16)
        XCTAssertEqual(try readJSON(out + "/config.json")["torch_dtype"] as? String, "bfloat16")
    }

    /// Our GGUF of gqa + lora-qv against llama.cpp's convert_hf_to_gguf.py on PEFT's merged model: the same
    /// tensors (names, shapes, types, values) and the same values for every key llama.cpp reads.
    func testGGUFExportMatchesLlamaCppConverter() throws {
        let out = try temporaryDirectory(self) + "/merged.gguf"
        _ = try ModelExport.merge(base: Fixtures.model("gqa"), adapterArguments: [Fixtures.peft("lora-qv")],
                                  out: out, format: .gguf)
        let ours = try GGUFFile(path: out), reference = try GGUFFile(path: Fixtures.export("llamacpp/merged-qv.gguf"))
        XCTAssertEqual(Set(ours.tensors.map(\.name)), Set(reference.tensors.map(\.name)))
        var worst: Float = 0
        for info in reference.tensors {
            let mine = try XCTUnwrap(ours.info(info.name), info.name)
            XCTAssertEqual(mine.shape, info.shape, info.name)
            XCTAssertEqual(mine.type, info.type, info.name)
            let a = try ours.tensor(info.name), b = try reference.tensor(info.name)
            worst = max(worst, maxAbsDifference(a.data, b.data, count: b.count))
        }
        print("GGUF export vs llama.cpp converter: max |tensor diff| = \(worst)")
        XCTAssertLessThan(worst, 1e-5, "PEFT and LoRAKit merge in F32 with different summation order only")
        let compared = reference.keys.filter { $0.hasPrefix("llama.") || $0.hasPrefix("tokenizer.") }
            + ["general.architecture", "general.type", "general.file_type"]
        XCTAssertGreaterThan(compared.count, 15)
        for key in compared { XCTAssertEqual(ours.metadata[key], reference.metadata[key], key) }
        XCTAssertEqual(ours.metadata["tokenizer.ggml.tokens"]?.elements?.count, 320)
    }

    func testGGUFReadsBackIntoTheSameModel() throws {
        let base = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let merged = try AdapterMerge.merge(base: base, adapters: try load(["lora-pattern"], weights: base))
        let path = try temporaryDirectory(self) + "/m.gguf"
        let vocabulary = GGUFVocabulary(tokens: (0..<320).map { "t\($0)" }, scores: Array(repeating: 0, count: 320),
                                        types: Array(repeating: .normal, count: 320), bosId: 1, eosId: 2,
                                        unknownId: 0, paddingId: nil)
        try LlamaGGUF.writeModel(merged, vocabulary: vocabulary, type: .f16, name: "m", to: path)
        let file = try GGUFFile(path: path)
        XCTAssertEqual(file.info("blk.0.attn_q.weight")?.type, .f16)
        XCTAssertEqual(file.info("blk.0.attn_norm.weight")?.type, .f32, "norms stay F32")
        XCTAssertEqual(file.metadata["general.file_type"], .uint32(1))
        let back = try LlamaGGUF.readModel(file, config: base.config)
        XCTAssertNil(AdapterMerge.firstMismatch(written: back, expected: merged, dtype: .f16, vectorsStayF32: true))
        XCTAssertNotNil(AdapterMerge.firstMismatch(written: back, expected: merged, dtype: .f32),
                        "F16 matrices really are rounded")
        let short = GGUFVocabulary(tokens: ["a"], scores: [0], types: [.normal], bosId: 0, eosId: 0, unknownId: nil, paddingId: nil)
        assertError(["1 pieces", "vocab_size is 320"]) {
            try LlamaGGUF.writeModel(merged, vocabulary: short, type: .f32, name: "m", to: path + "2")
        }
    }

    /// Q8_0 against gguf-py (Tests/Fixtures/gguf-quant, scripts/make_gguf_quant_fixtures.py): the same blocks byte
    /// for byte, ties rounded away from zero, an all-zero block; our reader dequantizes gguf-py's file as gguf-py does.
    func testQ8_0BlocksAreGGUFPysByteForByte() throws {
        let file = try GGUFFile(path: Fixtures.root.appendingPathComponent("gguf-quant/q8_0.gguf").path)
        let input = try file.tensor("input")
        XCTAssertEqual(file.info("quantized")?.type, .q8_0)
        XCTAssertEqual(file.info("quantized")?.shape, [4, 96])
        let ours = UnsafeMutableRawPointer.allocate(byteCount: GGMLType.q8_0.byteCount(elements: input.count), alignment: 2)
        defer { ours.deallocate() }
        Q8_0.quantize(input.data, count: input.count, into: ours)
        let data = try Data(contentsOf: URL(fileURLWithPath: file.path))
        let offset = try XCTUnwrap(file.info("quantized")?.fileOffset)
        let theirs = data[offset..<offset + 12 * Q8_0.blockBytes]
        XCTAssertEqual(Data(bytes: ours, count: 12 * Q8_0.blockBytes), theirs)
        let read = try file.tensor("quantized"), want = try file.tensor("dequantized")
        XCTAssertEqual(read.array.map(\.bitPattern), want.array.map(\.bitPattern))
        XCTAssertEqual(Array(read.array[128..<160]), Array(repeating: 0, count: 32), "the all-zero block of row 1")
        XCTAssertEqual(read[3 * 96], 127)
        XCTAssertEqual(read[3 * 96 + 2], -15, "−14.5 rounds away from zero")
    }

    /// A GGUF export carries the base's chat template (`tokenizer_config.json`'s `chat_template`, one template or
    /// the "default" of a named list) as `tokenizer.chat_template`, as llama.cpp's converter does; a base without
    /// one, or with an unreadable tokenizer_config.json, exports without it.
    func testGGUFExportCarriesTheChatTemplate() throws {
        let directory = try temporaryDirectory(self)
        let zephyr = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
        let configs: [(String, Any?)] = [("plain", zephyr), ("named", [["name": "tool_use", "template": "x"], ["name": "default", "template": zephyr]]),
                                         ("none", nil), ("broken", "{ not json")]
        for (name, template) in configs {
            let base = directory + "/" + name
            try FileManager.default.copyItem(atPath: Fixtures.model("gqa"), toPath: base)
            if name == "broken" {
                try Data("{ not json".utf8).write(to: URL(fileURLWithPath: base + "/tokenizer_config.json"))
            } else if let template {
                try JSONSerialization.data(withJSONObject: ["chat_template": template])
                    .write(to: URL(fileURLWithPath: base + "/tokenizer_config.json"))
            }
            let out = directory + "/\(name).gguf"
            _ = try ModelExport.merge(base: base, adapterArguments: [], out: out, format: .gguf)
            let written = try GGUFFile(path: out).metadata["tokenizer.chat_template"]
            XCTAssertEqual(written, ["plain", "named"].contains(name) ? .string(zephyr) : nil, name)
        }
    }

    /// A model merged as Q8_0: matrices whose rows are whole blocks are Q8_0, the others F16 (gqa's down_proj has
    /// rows of 48), norms F32; it reads back as the merged weights quantized, and llama.cpp's file type is 7.
    func testQ8_0GGUFExportQuantizesWholeBlockRowsAndFallsBackToF16() throws {
        let directory = try temporaryDirectory(self)
        let out = directory + "/m.gguf"
        let report = try ModelExport.merge(base: Fixtures.model("gqa"), adapterArguments: [Fixtures.peft("lora-qv")],
                                           out: out, format: .gguf, dtype: .q8_0)
        let file = try GGUFFile(path: out)
        XCTAssertEqual(file.metadata["general.file_type"], .uint32(7))
        XCTAssertEqual(file.info("blk.0.attn_q.weight")?.type, .q8_0)
        XCTAssertEqual(file.info("token_embd.weight")?.type, .q8_0)
        XCTAssertEqual(file.info("blk.0.ffn_down.weight")?.type, .f16, "rows of 48 are not whole blocks of 32")
        XCTAssertEqual(file.info("blk.0.attn_norm.weight")?.type, .f32)
        let base = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let merged = try AdapterMerge.merge(base: base, adapters: try load(["lora-qv"], weights: base))
        let back = try LlamaGGUF.readModel(file, config: base.config)
        XCTAssertNil(AdapterMerge.firstMismatch(written: back, expected: merged) {
            LlamaGGUF.storageType(shape: $0, requested: .q8_0)
        })
        XCTAssertNotNil(AdapterMerge.firstMismatch(written: back, expected: merged, dtype: .f16, vectorsStayF32: true),
                        "the matrices really are Q8_0, not F16")
        // 8 bits per weight move the logits a little, and the report says how much.
        XCTAssertGreaterThan(report.maxDifference, 0)
        XCTAssertLessThan(report.maxDifference, 0.05 * max(1, report.maxLogit))
        assertError(["q8_0 is a llama.cpp (GGUF) type", "--format gguf"]) {
            _ = try ModelExport.merge(base: Fixtures.model("gqa"), adapterArguments: [], out: directory + "/hf",
                                      format: .hf, dtype: .q8_0)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/hf"))
    }

    /// Our GGUF adapters against llama.cpp's convert_lora_to_gguf.py: identical tensors and alpha.
    func testGGUFAdapterMatchesLlamaCppConverter() throws {
        let directory = try temporaryDirectory(self)
        for (adapter, source) in [("lora-qv", Fixtures.peft("lora-qv")), ("adapter-b", Fixtures.export("adapter-b"))] {
            let out = directory + "/\(adapter).gguf"
            let report = try GGUFAdapterExport.export(adapterArgument: source, base: Fixtures.model("gqa"), out: out)
            XCTAssertEqual(report.rescaledModules, [], "plain adapters are written as they are")
            let ours = try GGUFFile(path: out), reference = try GGUFFile(path: Fixtures.export("llamacpp/\(adapter).gguf"))
            for key in ["general.architecture", "general.type", "adapter.type", "adapter.lora.alpha"] {
                XCTAssertEqual(ours.metadata[key], reference.metadata[key], "\(adapter): \(key)")
            }
            XCTAssertEqual(Set(ours.tensors.map(\.name)), Set(reference.tensors.map(\.name)), adapter)
            for info in reference.tensors {
                XCTAssertEqual(ours.info(info.name)?.shape, info.shape, info.name)
                XCTAssertEqual(try ours.tensor(info.name).array, try reference.tensor(info.name).array, "\(adapter): \(info.name)")
            }
        }
    }

    /// rsLoRA and rank/alpha patterns, which llama.cpp's single alpha cannot express, are carried in lora_b: the
    /// update llama.cpp computes (alpha / r · B·A) is PEFT's s·B·A for every module.
    func testGGUFAdapterCarriesPerModuleScales() throws {
        let dims = try gqaDims()
        for name in ["lora-all-rslora", "lora-pattern", "lora-qv"] {
            let out = try temporaryDirectory(self) + "/a.gguf"
            let report = try GGUFAdapterExport.export(adapterArgument: Fixtures.peft(name) + ":0.5",
                                                      base: Fixtures.model("gqa"), out: out)
            XCTAssertFalse(report.rescaledModules.isEmpty, "\(name) at weight 0.5 needs rescaling")
            let set = try AdapterSet.load(directory: Fixtures.peft(name), dims: dims)
            set.multiplier = 0.5
            let deltas = try GGUFAdapterExport.deltaWeights(try GGUFFile(path: out), dims: dims)
            XCTAssertEqual(Set(deltas.keys), Set(set.adapters.map(\.site)), name)
            for lora in set.adapters {
                let want = lora.deltaWeight(), got = try XCTUnwrap(deltas[lora.site])
                XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-5, "\(name) \(lora.site.moduleName)")
            }
        }
    }

    // MARK: what llama.cpp computed

    /// llama.cpp (llama-cpp-python) ran llama.cpp's converted files when the fixtures were made; the merged model
    /// and base+adapter here must give its logits (llama.cpp computes in F32 too, with its own kernels).
    func testLlamaCppLogitsOfMergedModelAndOfAdapter() throws {
        let path = Fixtures.export("llamacpp/expected.safetensors")
        let expected = try SafeTensorsFile(path: path)
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let base = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let adapters = try load(["lora-qv"], weights: base)
        let merged = try AdapterMerge.merge(base: base, adapters: adapters)
        let mergedLogits = try logits(merged, ids), llamaMerged = try expected.tensor("logits_merged")
        let d1 = maxAbsDifference(mergedLogits.data, llamaMerged.data, count: llamaMerged.count)
        let adapted = LlamaModel(weights: base)
        try adapters[0].attach(to: adapted)
        let adapterLogits = try adapted.logits(TokenBatch(sequences: [ids])), llamaLora = try expected.tensor("logits_lora")
        let d2 = maxAbsDifference(adapterLogits.data, llamaLora.data, count: llamaLora.count)
        print("llama.cpp: merged GGUF max |Δlogit| = \(d1); base GGUF + GGUF adapter max |Δlogit| = \(d2)")
        XCTAssertLessThan(d1, 2e-2)
        XCTAssertLessThan(d2, 2e-2)
        let baseLogits = try logits(base, ids)   // bound first: the tensor must outlive the pointer read
        XCTAssertGreaterThan(maxAbsDifference(baseLogits.data, llamaLora.data, count: llamaLora.count), 0.1,
                             "llama.cpp really applied the adapter")
    }
}
