import Foundation
import InstructionTuning
import MiniGPT
import Tensors
import XCTest

/// A tiny model learns a task it cannot do: validation loss falls and exact match rises on held-out prompts.
final class FineTunerLearningTests: XCTestCase {
    /// "What does the <two filler words> <animal> say?" → the animal's sound; held-out prompts use other fillers.
    static func records(count: Int, seed: UInt64) -> [[String: String]] {
        let sounds = [("cat", "meow"), ("dog", "woof"), ("cow", "moo")]
        let fillers = ["the", "small", "big", "red", "old", "happy", "sleepy", "my", "your", "green", "tall", "loud"]
        var rng = RandomGenerator(seed: seed)
        return (0..<count).map { _ in
            let (animal, sound) = sounds[Int(rng.next() % 3)]
            let a = fillers[Int(rng.next() % UInt64(fillers.count))], b = fillers[Int(rng.next() % UInt64(fillers.count))]
            return ["instruction": "What does the \(a) \(b) \(animal) say?", "output": sound]
        }
    }

    func testValidationLossFallsAndExactMatchRises() throws {
        Threads.set(2)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lorakit-learn-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: Self.records(count: 48, seed: 1))
            .write(to: URL(fileURLWithPath: dir + "/train.json"))
        try JSONSerialization.data(withJSONObject: Self.records(count: 12, seed: 2))
            .write(to: URL(fileURLWithPath: dir + "/val.json"))
        try #"{"prompt_input": "Q: {instruction} {input}\nA: ", "prompt_no_input": "Q: {instruction}\nA: "}"#
            .write(toFile: dir + "/template.json", atomically: true, encoding: .utf8)

        var options = FineTuneOptions(base: FineTunerGoldenTests.fixtures.appendingPathComponent("models/gqa").path,
                                      data: dir + "/train.json", out: dir + "/adapter")
        options.valData = dir + "/val.json"
        options.template = dir + "/template.json"
        options.targets = "all"
        options.rank = 8
        options.lr = 1e-2
        options.lrSchedule = "constant"
        options.steps = 60
        options.batchSize = 8
        options.evalEvery = 20
        options.dropout = 0
        let tuner = try FineTuner(options: options)
        let records = try InstructionDataset.load(path: dir + "/val.json")
        let template = try PromptTemplate.named(options.template)

        // Before: the adapter's B is zero, so this is the base model.
        let before = try Evaluator(model: tuner.model, tokenizer: tuner.tokenizer, template: template).evaluate(records)
        var validation: [Double] = []
        _ = try tuner.run { event in
            if case let .validation(_, loss) = event { validation.append(loss) }
        }
        let after = try Evaluator(model: tuner.model, tokenizer: tuner.tokenizer, template: template).evaluate(records)
        print("validation loss \(before.loss) → \(validation); exact match \(before.exactMatch) → \(after.exactMatch)")
        XCTAssertEqual(validation.count, 3)
        XCTAssertLessThan(validation[0], before.loss)
        XCTAssertLessThan(validation[2], validation[0])
        XCTAssertEqual(after.loss, validation[2], accuracy: 1e-9)
        XCTAssertEqual(before.exactMatch, 0)
        XCTAssertGreaterThanOrEqual(after.exactMatch, 0.75)
    }
}
