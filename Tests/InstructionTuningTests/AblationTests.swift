import Foundation
import InstructionTuning
import MiniGPT
import Tensors
import XCTest

/// `lora ablate`: nine target sets at a matched budget, results and plot written; bad plans refused.
final class AblationTests: XCTestCase {
    let gqa = FineTunerGoldenTests.fixtures.appendingPathComponent("models/gqa").path

    func dims() throws -> ModelDimensions { ModelDimensions(try LlamaWeights.load(directory: gqa).config) }

    func testDefaultSetsAreMatchedWithinBudget() throws {
        let d = try dims()
        let budget = 8 * AblationPlan.parametersPerRank([.q, .v], dims: d)
        let plan = try AblationPlan(sets: AblationPlan.defaultSets, budget: budget, dims: d)
        XCTAssertEqual(plan.entries.map(\.name), AblationPlan.defaultSets)
        for entry in plan.entries {
            let ratio = Double(entry.trainableParameters) / Double(budget)
            XCTAssertTrue(ratio > 0.65 && ratio < 1.35, "\(entry.name): \(entry.trainableParameters) vs \(budget)")
        }
        // A budget below rank 1 of the larger sets skips them, with a reason.
        let small = try AblationPlan(sets: AblationPlan.defaultSets, budget: 200, dims: d)
        XCTAssertFalse(small.skipped.isEmpty)
        XCTAssertTrue(small.skipped.allSatisfy { $0.reason.contains("rank 1 needs") })
        XCTAssertThrowsError(try AblationPlan(sets: ["all"], budget: 10, dims: d))
        XCTAssertThrowsError(try AblationPlan(sets: ["q"], ranks: [1, 0], dims: d))
        XCTAssertThrowsError(try AblationPlan(sets: ["q,banana"], budget: budget, dims: d))
    }

    func testAblationWritesResultsAndPlot() throws {
        Threads.set(2)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lorakit-ablate-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: FineTunerLearningTests.records(count: 16, seed: 3))
            .write(to: URL(fileURLWithPath: dir + "/data.json"))
        try #"{"prompt_input": "Q: {instruction} {input}\nA: ", "prompt_no_input": "Q: {instruction}\nA: "}"#
            .write(toFile: dir + "/template.json", atomically: true, encoding: .utf8)
        var options = FineTuneOptions(base: gqa, data: dir + "/data.json", out: dir + "/unused")
        options.template = dir + "/template.json"
        options.steps = 2
        options.batchSize = 4
        options.valFraction = 0.25
        let d = try dims()
        let plan = try AblationPlan(sets: AblationPlan.defaultSets,
                                    budget: 8 * AblationPlan.parametersPerRank([.q, .v], dims: d), dims: d)
        var runner = try AblationRunner(plan: plan, training: options, seeds: 1, out: dir + "/ablation")
        runner.evalLimit = 2
        let results = try runner.run()
        XCTAssertEqual(results.count, 9)
        XCTAssertEqual(Set(results.map(\.targets)), Set(AblationPlan.defaultSets))
        let csv = try String(contentsOfFile: dir + "/ablation/results.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.first.map(String.init), AblationResult.csvHeader)
        XCTAssertEqual(csv.count, 10)
        let svg = try String(contentsOfFile: dir + "/ablation/plot.svg", encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("validation loss") && svg.contains("exact match"))
        XCTAssertTrue(try String(contentsOfFile: dir + "/ablation/results.md", encoding: .utf8).contains("| q,v | 8 |"))
        XCTAssertThrowsError(try AblationRunner(plan: plan, training: options, seeds: 0, out: dir + "/x"))
    }
}
