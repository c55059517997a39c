import Checkpoints
import Foundation
import MiniGPT
import Tensors
import Tokenizer
import XCTest

/// A llama.cpp GGUF file as the base model (`--base model.gguf`): hyper-parameters, weights and tokenizer from the
/// one file. Fixtures by scripts/make_gguf_base_fixtures.py (llama.cpp's own Q4_K_M quantization; transformers'
/// logits and llama.cpp's tokens of that file).
final class GGUFBaseTests: XCTestCase {
    static let q4km = Fixtures.root.appendingPathComponent("gguf-base/model-q4_k_m.gguf").path

    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "gguf-base-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// A file llama.cpp quantized to Q4_K_M (Q4_K and Q6_K blocks) gives transformers' logits of the same file.
    func testQ4KMFileGivesTransformersLogits() throws {
        let file = try GGUFFile(path: Self.q4km)
        let types = Set(file.tensors.map(\.type.rawValue))
        XCTAssertTrue(types.isSuperset(of: [12, 14]), "the fixture holds Q4_K (12) and Q6_K (14) tensors: \(types)")
        let config = try BaseModel.config(Self.q4km)
        XCTAssertEqual([config.vocabSize, config.hiddenSize, config.intermediateSize, config.numHiddenLayers,
                        config.numAttentionHeads, config.numKeyValueHeads, config.headDim], [400, 256, 256, 2, 4, 2, 64])
        XCTAssertFalse(config.tieWordEmbeddings)
        XCTAssertEqual(config.rmsNormEps, 1e-5)
        XCTAssertEqual(config.maxPositionEmbeddings, 64)
        let expected = try SafeTensorsFile(path: Fixtures.root.appendingPathComponent("gguf-base/expected.safetensors").path)
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let got = try LlamaModel(weights: try BaseModel.weights(Self.q4km)).logits(TokenBatch(sequences: [ids]))
        XCTAssertEqual(got.shape.suffix(1), [400])
        let worst = maxAbsDifference(got.data, want.data, count: want.count)
        print("Q4_K_M GGUF: max |Δlogit| against transformers = \(worst)")
        XCTAssertLessThan(worst, 1e-4)
    }

    /// The same file loaded with `--quantize nf4`: each dequantized projection is stored as NF4 as it is read.
    func testQ4KMFileLoadsIntoAnNF4Base() throws {
        let weights = try BaseModel.weights(Self.q4km, quantization: try BaseQuantization(scheme: "nf4", doubleQuant: true))
        XCTAssertTrue(weights.isQuantized)
        let logits = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [[1, 5, 9]]))
        XCTAssertTrue((0..<logits.count).allSatisfy { logits[$0].isFinite })
    }

    /// The tokenizer built from the file's `tokenizer.ggml.*` metadata tokenizes as llama.cpp does with it.
    func testTokenizerFromTheFileTokenizesAsLlamaCpp() throws {
        let data = try Data(contentsOf: Fixtures.root.appendingPathComponent("gguf-base/tokens.json"))
        let want = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: [Int]])
        XCTAssertEqual(want.count, 5)
        let tokenizer = try BaseModel.tokenizer(Self.q4km)
        XCTAssertEqual([tokenizer.vocabSize, Int(tokenizer.bosId), Int(tokenizer.eosId), Int(tokenizer.unkId)], [400, 1, 2, 0])
        for (text, ids) in want {
            XCTAssertEqual(try tokenizer.encode(text).map(Int.init), ids, text)
        }
    }

    /// A SentencePiece model rebuilt from its own vocabulary (what a GGUF file keeps of it) is the same tokenizer:
    /// the same pieces, types and special ids, the same ids for text and the same text for ids.
    func testRebuiltSentencePieceModelIsTheOriginal() throws {
        let path = Fixtures.root.appendingPathComponent("tokenizer/bpe.model").path
        let original = try SentencePieceTokenizer(modelPath: path)
        let config = LlamaConfig(vocabSize: original.vocabSize, hiddenSize: 8, intermediateSize: 8, numHiddenLayers: 1,
                                 numAttentionHeads: 1)
        let vocabulary = try GGUFVocabulary(tokenizer: original, config: config)
        let rebuilt = try SentencePieceTokenizer(serializedModel: vocabulary.sentencePieceModel.serialized(), source: "rebuilt")
        XCTAssertEqual(rebuilt.vocabSize, original.vocabSize)
        XCTAssertEqual([rebuilt.bosId, rebuilt.eosId, rebuilt.unkId, rebuilt.padId],
                       [original.bosId, original.eosId, original.unkId, original.padId])
        XCTAssertEqual(rebuilt.modelType, .bpe)
        for id in 0..<Int32(original.vocabSize) {
            XCTAssertEqual(try rebuilt.piece(id), try original.piece(id))
            XCTAssertEqual(try rebuilt.pieceType(id), try original.pieceType(id))
            XCTAssertEqual(try rebuilt.score(id), try original.score(id))
        }
        let texts = ["The torou sanga 2024  pol — naïve 🙂 sol, vamsis!", "hello world", "  two  spaces\tand tab",
                     "12345 ünïcödé", "a", "", "日本語のテキスト", "<s> literally </s>"]
        for text in texts {
            let ids = try original.encode(text)
            XCTAssertEqual(try rebuilt.encode(text), ids, text)
            XCTAssertEqual(try rebuilt.decode(ids), try original.decode(ids), text)
        }
    }

    /// An F32 GGUF written from a Hugging Face model reads back as that model, bit for bit, and with its config
    /// (GQA, an explicit head_dim, tied embeddings).
    func testF32FileReadsBackAsTheHuggingFaceModel() throws {
        let directory = try temporaryDirectory()
        for name in ["gqa", "headdim", "tied"] {
            let hf = try LlamaWeights.load(directory: Fixtures.model(name))
            let vocabulary = try GGUFVocabulary(tokenizer: try BaseModel.tokenizer(Fixtures.model(name)), config: hf.config)
            let path = directory + "/\(name).gguf"
            try LlamaGGUF.writeModel(hf, vocabulary: vocabulary, type: .f32, name: name, to: path)
            XCTAssertTrue(BaseModel.isGGUF(path))
            XCTAssertFalse(BaseModel.isGGUF(Fixtures.model(name)))
            let config = try BaseModel.config(path)
            for (a, b) in [(config.vocabSize, hf.config.vocabSize), (config.hiddenSize, hf.config.hiddenSize),
                           (config.intermediateSize, hf.config.intermediateSize), (config.headDim, hf.config.headDim),
                           (config.numHiddenLayers, hf.config.numHiddenLayers),
                           (config.numAttentionHeads, hf.config.numAttentionHeads),
                           (config.numKeyValueHeads, hf.config.numKeyValueHeads),
                           (config.bosTokenId, hf.config.bosTokenId), (config.eosTokenId, hf.config.eosTokenId),
                           (config.maxPositionEmbeddings, hf.config.maxPositionEmbeddings)] {
                XCTAssertEqual(a, b, name)
            }
            XCTAssertEqual(config.tieWordEmbeddings, hf.config.tieWordEmbeddings, name)
            XCTAssertEqual(config.rmsNormEps, hf.config.rmsNormEps, name)
            XCTAssertEqual(config.ropeTheta, hf.config.ropeTheta, name)
            let read = try BaseModel.weights(path)
            let want = Dictionary(uniqueKeysWithValues: hf.named)
            XCTAssertEqual(read.named.map(\.0), hf.named.map(\.0), name)
            for (tensorName, tensor) in read.named {
                let other = try XCTUnwrap(want[tensorName])
                XCTAssertEqual(tensor.shape, other.shape, tensorName)
                XCTAssertEqual(tensor.array.map(\.bitPattern), other.array.map(\.bitPattern), "\(name): \(tensorName)")
            }
            let inMemory = try BaseModel.weights(path, inMemory: true)
            XCTAssertTrue(inMemory.named.allSatisfy { $0.1.ownsMemory }, "inMemory copies the mapped tensors")
        }
    }

    /// What LoRAKit cannot read is refused with the file and the reason: another architecture, a byte-level BPE
    /// tokenizer, rope scaling, a missing hyper-parameter, a vocabulary that does not fit the embedding.
    func testUnsupportedFilesAreRefusedByName() throws {
        let directory = try temporaryDirectory()
        let hf = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let vocabulary = try GGUFVocabulary(tokenizer: try BaseModel.tokenizer(Fixtures.model("gqa")), config: hf.config)

        func file(_ name: String, edit: (inout [(key: String, value: GGUFValue)]) -> Void) throws -> String {
            var metadata: [(key: String, value: GGUFValue)] = [("general.architecture", .string("llama"))]
            metadata += LlamaGGUF.hyperparameters(hf.config) + vocabulary.metadata
            edit(&metadata)
            var writer = GGUFWriter()
            for (key, value) in metadata { try writer.add(key, value) }
            for (tensorName, tensor) in LlamaGGUF.tensors(of: hf) { try writer.addTensor(tensorName, tensor, type: .f32) }
            let path = directory + "/\(name).gguf"
            try writer.write(to: path)
            return path
        }
        func assertRefused(_ path: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try BaseModel.config(path), file: file, line: line) { error in
                let message = "\(error)"
                for fragment in [path] + fragments {
                    XCTAssertTrue(message.contains(fragment), "\(message) lacks \(fragment)", file: file, line: line)
                }
            }
        }
        func replacing(_ key: String, with value: GGUFValue?) -> (inout [(key: String, value: GGUFValue)]) -> Void {
            return { metadata in
                metadata.removeAll { $0.key == key }
                if let value { metadata.append((key, value)) }
            }
        }
        XCTAssertNoThrow(try BaseModel.config(try file("plain", edit: { _ in })))
        assertRefused(try file("qwen", edit: replacing("general.architecture", with: .string("qwen2"))),
                      ["general.architecture is \"qwen2\"", "LLaMA-architecture"])
        assertRefused(try file("gpt2-vocab", edit: replacing("tokenizer.ggml.model", with: .string("gpt2"))),
                      ["\"gpt2\"", "SentencePiece"])
        assertRefused(try file("yarn", edit: replacing("llama.rope.scaling.type", with: .string("yarn"))),
                      ["rope scaling \"yarn\""])
        assertRefused(try file("no-eps", edit: replacing("llama.attention.layer_norm_rms_epsilon", with: nil)),
                      ["llama.attention.layer_norm_rms_epsilon"])
        assertRefused(try file("no-blocks", edit: replacing("llama.block_count", with: nil)), ["llama.block_count"])
        assertRefused(try file("short-vocab", edit: replacing("tokenizer.ggml.tokens", with: .strings(["<unk>", "<s>", "</s>"]))),
                      ["tokenizer.ggml.scores", "3 values"])
        assertRefused(try file("bad-bos", edit: replacing("tokenizer.ggml.bos_token_id", with: .uint32(100_000))),
                      ["tokenizer.ggml.bos_token_id is 100000"])
        assertRefused(directory + "/missing.gguf", ["no such GGUF file"])
    }
}
