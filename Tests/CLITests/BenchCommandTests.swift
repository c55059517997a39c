import Foundation
import XCTest

/// `lora bench` as a user runs it: one JSON line on stdout, clean refusals.
final class BenchCommandTests: XCTestCase {
    let tiny = ["--dim", "32", "--layers", "2", "--heads", "4", "--hidden", "48", "--vocab", "101", "--seq", "10",
                "--batch", "2", "--rank", "4", "--steps", "1", "--warmup", "0", "--threads", "2", "--sgemm-sizes", "96"]

    func json(_ run: LoraRun) throws -> [String: Any] {
        XCTAssertEqual(run.status, 0, run.stderr)
        let lines = run.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "expected one JSON line, got: \(run.stdout)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data((lines.first ?? "").utf8)) as? [String: Any])
    }

    func testPrintsOneJSONLineWithTheContractKeys() throws {
        // the reference script's spelling of the targets
        let object = try json(try Lora.run(["bench"] + tiny + ["--targets", "q_proj,v_proj"]))
        for key in ["tokens_per_s", "step_s", "peak_rss_mib", "gflops", "sgemm_peak_gflops", "params", "trainable",
                    "openblas_core", "gemm"] {
            XCTAssertNotNil(object[key], "\(key) missing")
        }
        // every product on OpenBLAS: the same adapter, and the JSON says which kernel ran
        let openBLAS = try json(try Lora.run(["bench"] + tiny + ["--targets", "q,v", "--gemm", "openblas"]))
        XCTAssertEqual(openBLAS["gemm"] as? String, "openblas")
        XCTAssertEqual(openBLAS["trainable"] as? Int, object["trainable"] as? Int)
        XCTAssertEqual(object["trainable"] as? Int, 2 * (4 * 32 + 32 * 4) * 2)
        // LoRAKit's spelling gives the same adapter
        let short = try json(try Lora.run(["bench"] + tiny + ["--targets", "q,v"]))
        XCTAssertEqual(short["trainable"] as? Int, object["trainable"] as? Int)
    }

    /// DoRA adapters: m per adapted row on top of A and B, the JSON says so; on an NF4 base as well (QLoRA + DoRA).
    func testDoRA() throws {
        let plain = try json(try Lora.run(["bench"] + tiny + ["--targets", "q,v"]))
        XCTAssertEqual(plain["dora"] as? Bool, false)
        for extra in [[], ["--quantize", "nf4"]] {
            let dora = try json(try Lora.run(["bench"] + tiny + ["--targets", "q,v", "--dora"] + extra))
            XCTAssertEqual(dora["dora"] as? Bool, true)
            XCTAssertEqual(dora["trainable"] as? Int, (plain["trainable"] as? Int ?? 0) + 2 * 32 * 2, "\(extra)")
            XCTAssertEqual((dora["loss"] as? Double)?.isFinite, true)
        }
        assertCleanFailure(try Lora.run(["bench"] + tiny + ["--dora", "--generate", "2"]),
                           mentions: "--dora goes with training runs")
    }

    /// `--grad-checkpoint`: the JSON says so and the steps compute the same loss.
    func testGradientCheckpointing() throws {
        let steps = ["--targets", "all", "--steps", "2"]
        let plain = try json(try Lora.run(["bench"] + tiny + steps))
        let checkpointed = try json(try Lora.run(["bench"] + tiny + steps + ["--grad-checkpoint"]))
        XCTAssertEqual(plain["grad_checkpoint"] as? Bool, false)
        XCTAssertEqual(checkpointed["grad_checkpoint"] as? Bool, true)
        XCTAssertEqual(checkpointed["loss"] as? Double, plain["loss"] as? Double)
        assertCleanFailure(try Lora.run(["bench"] + tiny + ["--grad-checkpoint", "--generate", "2"]),
                           mentions: "--grad-checkpoint goes with training runs")
    }

    func testGenerationMode() throws {
        let object = try json(try Lora.run(["bench"] + tiny + ["--generate", "3", "--prompt-tokens", "4"]))
        XCTAssertEqual(object["new_tokens"] as? Int, 3)
        XCTAssertEqual((object["tokens"] as? [Any])?.count, 3)
        XCTAssertEqual((object["prompt"] as? [Any])?.count, 4)
    }

    func testRefusals() throws {
        assertCleanFailure(try Lora.run(["bench"] + tiny + ["--targets", "q,x"]), mentions: "unknown target 'x'")
        assertCleanFailure(try Lora.run(["bench", "--dim", "30", "--heads", "4"]), mentions: "not divisible")
        assertCleanFailure(try Lora.run(["bench"] + tiny + ["--sgemm-sizes", "x"]), mentions: "--sgemm-sizes")
        assertCleanFailure(try Lora.run(["bench", "--base", "/nonexistent"]), mentions: "--base goes with --generate")
        assertCleanFailure(try Lora.run(["bench", "--generate", "4", "--base", "/nonexistent/model"]),
                           mentions: "/nonexistent/model")
    }
}
