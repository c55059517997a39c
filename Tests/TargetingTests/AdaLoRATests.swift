import Checkpoints
import Foundation
import MiniGPT
import Targeting
import Tensors
import XCTest

/// AdaLoRA: PEFT's pruned adapters give PEFT's logits; finite-difference checks of the SVD-form backward and of
/// the orthogonality regulariser; PEFT's budget schedule; save/load with rank_pattern
/// (fixtures by scripts/make_adalora_fixtures.py).
final class AdaLoRATests: XCTestCase {
    static let adaLoRAFixtures = Fixtures.root.appendingPathComponent("adalora").path

    // MARK: PEFT files

    func testPrunedPEFTAdapterGivesPEFTLogits() throws {
        Threads.set(1)
        let directory = Self.adaLoRAFixtures + "/pruned"
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let model = LlamaModel(weights: weights)
        let sets = try AdapterDirectory.attachAll([directory], to: model)
        let set = try XCTUnwrap(sets.first as? AdaLoRASet)
        // rank_pattern keeps 2, 4, 1, 3, 0 and 2 triplets of init_r 4.
        XCTAssertEqual(set.adapters.map(\.rank), [2, 4, 1, 3, 0, 2])
        XCTAssertEqual(set.adapters.map(\.site.projection), [.q, .v, .down, .q, .v, .down])
        XCTAssertEqual(set.config.scale, 8 / (4 + 1e-5), accuracy: 1e-7)

        let expected = try SafeTensorsFile(path: directory + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let got = try model.logits(TokenBatch(sequences: [ids]))
        let difference = maxAbsDifference(got.data, want.data, count: want.count)
        print("adalora pruned: max |logits - PEFT| = \(difference)")
        XCTAssertLessThan(difference, 1e-4)
        let base = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
        XCTAssertGreaterThan(maxAbsDifference(base.data, want.data, count: want.count), 0.1)

        // The LoRA loader names the type instead of failing on the boolean rank_pattern.
        assertError(["ADALORA"]) { try AdapterSet.load(directory: directory, dims: weights.dims) }
    }

    /// export-adapter writes an AdaLoRA adapter as a llama.cpp LoRA: the update llama.cpp computes from the file
    /// (alpha / r · B·A') is PEFT's s·B·diag(E)·A for every module that kept a triplet.
    func testGGUFExportOfAdaLoRAGivesItsUpdates() throws {
        let directory = Self.adaLoRAFixtures + "/pruned"
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("adalora-\(UUID().uuidString).gguf").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let report = try GGUFAdapterExport.export(adapterArgument: directory + ":0.5", base: Fixtures.model("gqa"), out: out)
        XCTAssertEqual(report.modules, 5, "the module with no kept triplet is left out")
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try XCTUnwrap(try AdapterDirectory.load(directory, dims: weights.dims) as? AdaLoRASet)
        set.multiplier = 0.5
        let exported = try GGUFAdapterExport.deltaWeights(try GGUFFile(path: out), dims: weights.dims)
        XCTAssertEqual(exported.count, 5)
        for module in set.adapters where module.rank > 0 {
            let want = module.deltaWeight()
            let got = try XCTUnwrap(exported[module.site], "\(module.site)")
            XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-6, "\(module.site)")
        }
    }

    /// combine and analyze read an AdaLoRA adapter as the plain LoRA with the same update: each module that kept
    /// a triplet, at its kept rank, with B·A' = s·B·diag(E)·A; `lora combine` of it alone (PEFT's rule: one adapter
    /// combines linearly) writes an adapter with those updates.
    func testEquivalentLoRAHasTheAdaLoRAUpdatesAndCombines() throws {
        Threads.set(1)
        let directory = Self.adaLoRAFixtures + "/pruned"
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let ada = try AdaLoRASet.load(directory: directory, dims: weights.dims)
        let lora = try AdapterSet.loadFactors(directory: directory, dims: weights.dims)
        XCTAssertEqual(lora.adapters.map(\.rank), [2, 4, 1, 3, 2], "the module that kept nothing is left out")
        XCTAssertEqual(lora.adapters.map(\.site), ada.adapters.filter { $0.rank > 0 }.map(\.site))
        func assertSameUpdates(_ set: AdapterSet, weight: Float, _ label: String) throws {
            for module in ada.adapters where module.rank > 0 {
                let want = module.deltaWeight()
                let got = try XCTUnwrap(set.deltaWeight(layer: module.site.layer, projection: module.site.projection))
                for i in 0..<want.count { want[i] *= weight }
                XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-6, "\(label) \(module.site)")
            }
        }
        try assertSameUpdates(lora, weight: 1, "equivalent LoRA")

        let out = try temporaryDirectory(self) + "/combined"
        let combined = try AdapterCombination.combine(adapterArguments: [directory + ":0.5"],
                                                      base: Fixtures.model("gqa"), method: .svd, out: out)
        XCTAssertEqual(combined.adapters.count, 5)
        try assertSameUpdates(try AdapterSet.load(directory: out, dims: weights.dims), weight: 0.5, "combined")

        // analyze reads it too: amplification rows for the five modules
        let report = AnalysisReport(weights: weights, adapter: lora, compare: nil)
        try report.write(to: try temporaryDirectory(self) + "/analysis")
    }

    func testMergedAdaLoRAAdapterGivesPEFTLogits() throws {
        Threads.set(1)
        let directory = Self.adaLoRAFixtures + "/pruned"
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let set = try AdapterDirectory.load(directory, dims: weights.dims)
        let merged = try AdapterMerge.merge(base: weights, adapters: [set])
        let expected = try SafeTensorsFile(path: directory + "/expected.safetensors")
        let ids = try expected.tensor("ids").array.map { Int32($0) }
        let want = try expected.tensor("logits")
        let got = try LlamaModel(weights: merged).logits(TokenBatch(sequences: [ids]))
        XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-4)
        // Only the projections with kept triplets are new; the one with rank 0 (layer 1's v) stays the base's.
        XCTAssertTrue(merged.layers[1].v.data == weights.layers[1].v.data)
        XCTAssertFalse(merged.layers[0].q.data == weights.layers[0].q.data)
        // At multiplier 0.5 the merged update is half.
        set.multiplier = 0.5
        let half = try AdapterMerge.merge(base: weights, adapters: [set])
        let check = try AdapterMerge.logitDifference(base: weights, adapters: [set], merged: half, tokens: ids)
        XCTAssertLessThan(check.maxDifference, 1e-4)
    }

    func testSaveAndLoadKeepOnlyThePatternsTriplets() throws {
        Threads.set(1)
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let schedule = AdaLoRASchedule(targetRank: 2, tinit: 0, tfinal: 1, deltaT: 1)
        let config = AdaLoRAConfig(targets: [.q, .o, .up], layers: [1], initR: 5, targetR: 2, loraAlpha: 10,
                                   schedule: schedule, totalStep: 3)
        let set = try AdaLoRASet(config: config, dims: weights.dims, seed: 7)
        try set.startTraining(schedule: schedule, totalSteps: 3)
        var rng = RandomGenerator(seed: 8)
        rng.fillNormal(set.parameters.data, count: set.parameters.count, std: 0.4)
        set.gradients.copy(from: set.parameters)
        // Steps 0 (importance only), 1 (cubic budget) and 2 = total − tfinal (forced to the target): the budget
        // ends at target_r × modules with e = 0 on every pruned triplet.
        for step in 0..<3 { set.afterOptimizerStep(step) }
        let pattern = try XCTUnwrap(set.config.rankPattern)
        XCTAssertEqual(pattern.values.reduce(0) { $0 + $1.filter { $0 }.count }, 2 * 3)
        for adapter in set.adapters {
            let kept = try XCTUnwrap(pattern[adapter.site.moduleName + ".lora_E"])
            for (i, keep) in kept.enumerated() where !keep { XCTAssertEqual(adapter.e[i], 0) }
        }

        let directory = try temporaryDirectory(self)
        try set.save(to: directory, baseModelPath: "base")
        let json = try readJSON(directory + "/adapter_config.json")
        XCTAssertEqual(json["peft_type"] as? String, "ADALORA")
        XCTAssertEqual(json["init_r"] as? Int, 5)
        XCTAssertEqual(json["total_step"] as? Int, 3)
        let file = try SafeTensorsFile(path: directory + "/adapter_model.safetensors")
        for adapter in set.adapters {
            let kept = pattern[adapter.site.moduleName + ".lora_E"]!.filter { $0 }.count
            XCTAssertEqual(file.info("base_model.model.\(adapter.site.moduleName).lora_E")?.shape, [kept, 1])
        }
        let loaded = try AdaLoRASet.load(directory: directory, dims: weights.dims)
        XCTAssertEqual(loaded.config.rankPattern, pattern)

        // The pruned adapter computes what the full one with its masked triplets computes.
        let ids: [Int32] = [1, 40, 77, 5, 300, 12]
        let full = LlamaModel(weights: weights), pruned = LlamaModel(weights: weights)
        try set.attach(to: full)
        try loaded.attach(to: pruned)
        let a = try full.logits(TokenBatch(sequences: [ids])), b = try pruned.logits(TokenBatch(sequences: [ids]))
        XCTAssertLessThan(maxAbsDifference(a.data, b.data, count: a.count), 1e-5)
        let base = try LlamaModel(weights: weights).logits(TokenBatch(sequences: [ids]))
        XCTAssertGreaterThan(maxAbsDifference(a.data, base.data, count: a.count), 1e-3)
        // Saving the loaded adapter again writes the same tensors.
        let again = try temporaryDirectory(self)
        try loaded.save(to: again, baseModelPath: "base")
        let second = try SafeTensorsFile(path: again + "/adapter_model.safetensors")
        XCTAssertEqual(second.names, file.names)
        for name in file.names { XCTAssertEqual(try second.tensor(name).array, try file.tensor(name).array, name) }
    }

    /// `generate --prompts` switches adapters on one base: AdaLoRA, DoRA and both together must each give what a
    /// fresh model with the same adapters gives, whatever was attached before.
    func testAdapterLibrarySwitchesAdaLoRAAndDoRAAdapters() throws {
        Threads.set(1)
        let weights = try LlamaWeights.load(directory: Fixtures.model("gqa"))
        let adaLoRA = Self.adaLoRAFixtures + "/pruned"
        let dora = Fixtures.root.appendingPathComponent("dora/dora-mixed").path
        let expected = try SafeTensorsFile(path: adaLoRA + "/expected.safetensors")
        let batch = TokenBatch(sequences: [try expected.tensor("ids").array.map { Int32($0) }])
        let library = AdapterLibrary(model: LlamaModel(weights: weights))
        for arguments in [[adaLoRA], [dora], [adaLoRA + ":0.5", dora], [], [adaLoRA]] {
            try library.activate(arguments)
            let got = try library.model.logits(batch)
            let fresh = LlamaModel(weights: weights)
            try AdapterDirectory.attachAll(arguments, to: fresh)
            let want = try fresh.logits(batch)
            XCTAssertLessThan(maxAbsDifference(got.data, want.data, count: want.count), 1e-6, "\(arguments)")
            if arguments == [adaLoRA] {
                let peft = try expected.tensor("logits")
                XCTAssertLessThan(maxAbsDifference(got.data, peft.data, count: peft.count), 1e-4)
            }
        }
        XCTAssertEqual(library.count, 2)
    }

    // MARK: schedule

    /// Budgets and mask flags computed by PEFT's own `RankAllocator.budget_schedule` for these settings.
    func testBudgetScheduleIsPEFTs() {
        let cases: [(initial: Int, target: Int, tinit: Int, tfinal: Int, total: Int, deltaT: Int,
                     want: [(step: Int, budget: Int, mask: Bool)])] = [
            (24, 12, 0, 2, 4, 1, [(0, 24, false), (1, 13, true), (2, 12, true), (3, 12, true)]),
            (336, 168, 10, 20, 100, 5, [(0, 336, false), (10, 336, false), (11, 328, false), (45, 189, true),
                                        (79, 168, false), (80, 168, true), (81, 168, true), (99, 168, true)]),
            (336, 224, 0, 0, 37, 3, [(0, 336, false), (1, 327, false), (18, 239, true), (36, 224, true),
                                     (37, 224, false), (38, 224, true)]),
        ]
        for c in cases {
            for w in c.want {
                let got = RankAllocator.budget(step: w.step, initialBudget: c.initial, targetBudget: c.target, tinit: c.tinit,
                                               tfinal: c.tfinal, totalSteps: c.total, deltaT: c.deltaT)
                XCTAssertEqual(got.budget, w.budget, "step \(w.step) of \(c)")
                XCTAssertEqual(got.mask, w.mask, "step \(w.step) of \(c)")
            }
        }
    }

    func testBadSchedulesAndConfigsAreClearErrors() throws {
        assertError(["--target-rank 9", "below --rank 8"]) {
            try AdaLoRASchedule(targetRank: 9).validate(initialRank: 8, totalSteps: 10)
        }
        assertError(["--target-rank 8", "below --rank 8"]) {
            try AdaLoRASchedule(targetRank: 8).validate(initialRank: 8, totalSteps: 10)
        }
        assertError(["no budgeting phase"]) {
            try AdaLoRASchedule(targetRank: 2, tinit: 5, tfinal: 5).validate(initialRank: 8, totalSteps: 10)
        }
        assertError(["--beta1"]) { try AdaLoRASchedule(targetRank: 2, beta1: 1).validate(initialRank: 8, totalSteps: nil) }
        let directory = try temporaryDirectory(self)
        func write(_ config: [String: Any]) throws -> String {
            try writeJSON(config, to: directory + "/adapter_config.json")
            return directory + "/adapter_config.json"
        }
        let good: [String: Any] = ["peft_type": "ADALORA", "target_modules": ["q_proj"], "init_r": 4, "target_r": 2]
        var bad = good
        bad["rank_pattern"] = ["model.layers.0.self_attn.q_proj.lora_E": [true, false]]
        assertError(["adapter_config.json", "2 entries, expected init_r = 4"]) { try AdaLoRAConfig.load(path: try write(bad)) }
        bad = good
        bad["use_dora"] = true
        assertError(["DoRA"]) { try AdaLoRAConfig.load(path: try write(bad)) }
        bad = good
        bad["rank_pattern"] = ["model.layers.5.self_attn.q_proj.lora_E": [true, false, true, true]]
        let config = try AdaLoRAConfig.load(path: try write(bad))
        assertError(["rank_pattern names model.layers.5"]) { try config.sites(layerCount: 2) }
    }

    // MARK: gradients

    let rows = 5, inF = 7, outF = 6, rank = 3

    func makeAdapter(dropout: Float, seed: UInt64) -> SVDLinear {
        var rng = RandomGenerator(seed: seed)
        let a = Tensor(shape: [rank, inF]), e = Tensor(shape: [rank]), b = Tensor(shape: [outF, rank])
        rng.fillNormal(a.data, count: a.count, std: 0.5)
        rng.fillNormal(e.data, count: e.count, std: 1)
        rng.fillNormal(b.data, count: b.count, std: 0.5)
        return SVDLinear(site: AdapterSite(layer: 0, projection: .q), a: a, e: e, b: b,
                         aGradient: Tensor(shape: a.shape), eGradient: Tensor(shape: e.shape),
                         bGradient: Tensor(shape: b.shape), scale: 1.5, dropout: dropout, dropoutSeed: seed &+ 1,
                         scratch: LoRAScratch())
    }

    /// dX, dA, dE and dB of L = Σ w ⊙ out against central differences in Double-accumulated loss, with and
    /// without dropout (the mask is replayed by restoring the generator before each forward).
    func testSVDLinearBackwardMatchesFiniteDifferences() {
        Threads.set(1)
        for dropout: Float in [0, 0.3] {
            let adapter = makeAdapter(dropout: dropout, seed: 11)
            var rng = RandomGenerator(seed: 12)
            let x = Tensor(shape: [rows, inF]), weight = Tensor(shape: [rows, outF])
            rng.fillNormal(x.data, count: x.count, std: 1)
            rng.fillNormal(weight.data, count: weight.count, std: 1)
            let start = adapter.dropoutRNG
            func loss() -> Double {
                adapter.dropoutRNG = start
                let out = Tensor(shape: [rows, outF])
                adapter.forward(out: out.data, input: x.data, rows: rows, training: true)
                return (0..<out.count).reduce(0.0) { $0 + Double(out[$1]) * Double(weight[$1]) }
            }
            _ = loss()
            let dX = Tensor(shape: [rows, inF])
            adapter.backward(dInput: dX.data, dOut: weight.data, input: x.data, rows: rows)
            let h: Float = 1e-2
            for (name, values, gradient) in [("x", x, dX), ("A", adapter.a, adapter.aGradient),
                                             ("E", adapter.e, adapter.eGradient), ("B", adapter.b, adapter.bGradient)] {
                var worst: Double = 0
                for i in 0..<values.count {
                    let saved = values[i]
                    values[i] = saved + h; let up = loss()
                    values[i] = saved - h; let down = loss()
                    values[i] = saved
                    worst = max(worst, abs((up - down) / Double(2 * h) - Double(gradient[i])))
                }
                XCTAssertLessThan(worst, 2e-3, "d\(name), dropout \(dropout)")
            }
        }
    }

    /// The regulariser's value is PEFT's mean of Frobenius norms, and its gradient matches central differences.
    func testOrthogonalRegularizerValueAndGradient() throws {
        Threads.set(1)
        let dims = ModelDimensions(tinyConfig())
        let schedule = AdaLoRASchedule(targetRank: 1, orthRegWeight: 0.7)
        let config = AdaLoRAConfig(targets: [.q, .down], layers: nil, initR: 3, targetR: 1, loraAlpha: 4,
                                   schedule: schedule, totalStep: 10)
        let set = try AdaLoRASet(config: config, dims: dims, seed: 3)
        var rng = RandomGenerator(seed: 4)
        rng.fillNormal(set.parameters.data, count: set.parameters.count, std: 0.4)

        // The value by loops, in Double: 0.7 · mean over the 2 × 4 matrices of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F.
        var sum = 0.0
        for adapter in set.adapters {
            let r = adapter.rank
            for (m, k, transposed) in [(adapter.a, adapter.inFeatures, false), (adapter.b, adapter.outFeatures, true)] {
                var squares = 0.0
                for i in 0..<r {
                    for j in 0..<r {
                        var dot = 0.0
                        for t in 0..<k {
                            dot += transposed ? Double(m[t * r + i]) * Double(m[t * r + j])
                                              : Double(m[i * k + t]) * Double(m[j * k + t])
                        }
                        let c = dot - (i == j ? 1 : 0)
                        squares += c * c
                    }
                }
                sum += squares.squareRoot()
            }
        }
        set.zeroGradients()
        let value = set.addRegularization()
        XCTAssertEqual(value, 0.7 * sum / 8, accuracy: 1e-5)

        let analytic = set.gradients.clone()
        let p = set.parameters
        var worst: Double = 0
        for i in stride(from: 0, to: p.count, by: 3) {
            let saved = p[i]
            p[i] = saved + 1e-2; let up = set.addRegularization()
            p[i] = saved - 1e-2; let down = set.addRegularization()
            p[i] = saved
            worst = max(worst, abs((up - down) / 2e-2 - Double(analytic[i])))
        }
        XCTAssertLessThan(worst, 2e-3)
        // e takes no part in the regulariser.
        for adapter in set.adapters { XCTAssertTrue(adapter.eGradient.array.allSatisfy { $0 == 0 }) }
    }
}
