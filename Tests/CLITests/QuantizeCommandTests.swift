import Checkpoints
import Foundation
import Tensors
import XCTest

/// `--quantize nf4` (QLoRA's 4-bit base) through the real executable.
final class QuantizeCommandTests: XCTestCase {
    let gqa = Lora.fixture("models/gqa")

    private func logits(_ arguments: [String], ids: [Int32], directory: String, name: String) throws -> Tensor {
        let out = directory + "/\(name).safetensors"
        let run = try Lora.run(["forward", "--base", gqa, "--ids", ids.map(String.init).joined(separator: ","),
                                "--out", out] + arguments)
        XCTAssertEqual(run.status, 0, run.stderr)
        return try SafeTensorsFile(path: out).tensor("logits")
    }

    private func maxDifference(_ a: Tensor, _ b: Tensor) -> Float {
        XCTAssertEqual(a.count, b.count)
        return (0..<min(a.count, b.count)).reduce(0) { max($0, abs(a[$1] - b[$1])) }
    }

    /// `lora forward --quantize nf4` matches transformers on bitsandbytes' NF4 weights; the F32 model is far from it.
    func testForwardMatchesNF4Reference() throws {
        let directory = try Lora.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fixture = try SafeTensorsFile(path: Lora.fixture("nf4/nf4.safetensors"))
        let ids = try fixture.tensor("gqa.ids").array.map { Int32($0) }
        let reference = try fixture.tensor("gqa.logits_nf4")
        let nf4 = try logits(["--quantize", "nf4"], ids: ids, directory: directory, name: "nf4")
        let f32 = try logits([], ids: ids, directory: directory, name: "f32")
        let nf4Error = maxDifference(nf4, reference), f32Error = maxDifference(f32, reference)
        print("lora forward: NF4 max |Δlogit| \(nf4Error) from the NF4 reference, F32 \(f32Error)")
        XCTAssertLessThan(nf4Error, 1e-4)
        XCTAssertGreaterThan(f32Error, 1000 * nf4Error)
        let noDQ = try logits(["--quantize", "nf4", "--double-quant", "false"], ids: ids, directory: directory, name: "nodq")
        XCTAssertLessThan(maxDifference(noDQ, try fixture.tensor("gqa.logits_nf4_nodq")), 1e-4)
    }

    /// QLoRA end to end: finetune on an NF4 base, then eval and generate with the adapter on the NF4 base.
    func testFinetuneEvalGenerateOnNF4Base() throws {
        let directory = try Lora.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let data = Lora.fixture("peft/train3/data.json"), out = directory + "/adapter"
        let train = try Lora.run(["finetune", "--base", gqa, "--data", data, "--out", out, "--steps", "2",
                                  "--batch-size", "2", "--targets", "q,v,down", "--lr", "1e-2", "--quantize", "nf4"])
        XCTAssertEqual(train.status, 0, train.stderr)
        XCTAssertTrue(train.stderr.contains("projections stored as nf4"), train.stderr)
        let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8)
        XCTAssertEqual(metrics.split(separator: "\n").count, 2)
        let eval = try Lora.run(["eval", "--base", gqa, "--adapter", out, "--data", data, "--no-generate",
                                 "--quantize", "nf4"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any])
        let loss = try XCTUnwrap(report["loss"] as? Double)
        XCTAssertTrue(loss.isFinite && loss > 0)
        let generate = try Lora.run(["generate", "--base", gqa, "--adapter", out, "--instruction", "hi",
                                     "--max-new-tokens", "4", "--quantize", "nf4"])
        XCTAssertEqual(generate.status, 0, generate.stderr)
    }

    /// Projection sizes that are not multiples of 64 (short last blocks, odd counts) load and run.
    func testProjectionsThatDoNotDivideIntoBlocks() throws {
        let directory = try Lora.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = directory + "/odd"
        let save = try Lora.run(["bench", "--dim", "20", "--heads", "2", "--hidden", "33", "--layers", "1",
                                 "--vocab", "50", "--seq", "8", "--save-model", model])
        XCTAssertEqual(save.status, 0, save.stderr)
        let out = directory + "/logits.safetensors"
        let run = try Lora.run(["forward", "--base", model, "--ids", "1,7,9,30", "--out", out, "--quantize", "nf4"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let logits = try SafeTensorsFile(path: out).tensor("logits")
        XCTAssertEqual(logits.shape, [4, 50])
        XCTAssertTrue(logits.array.allSatisfy(\.isFinite))
    }

    /// `lora bench --quantize nf4` reports the projections' memory: under 30 % of F32.
    func testBenchReportsMemory() throws {
        let run = try Lora.run(["bench", "--dim", "64", "--layers", "1", "--heads", "4", "--hidden", "128",
                                "--vocab", "100", "--seq", "16", "--batch", "2", "--steps", "1", "--warmup", "0",
                                "--sgemm-sizes", "64", "--quantize", "nf4"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let stored = try XCTUnwrap(json["base_weight_bytes"] as? Int), f32 = try XCTUnwrap(json["base_weight_bytes_f32"] as? Int)
        XCTAssertEqual(json["quantize"] as? String, "nf4")
        XCTAssertEqual(f32, 4 * (4 * 64 * 64 + 3 * 64 * 128))
        XCTAssertLessThan(Double(stored), 0.3 * Double(f32))
        XCTAssertTrue((json["loss"] as? Double).map { $0.isFinite } ?? false)
    }
}
