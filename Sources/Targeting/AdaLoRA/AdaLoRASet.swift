import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// The AdaLoRA adapters of one PEFT `ADALORA` adapter: one `SVDLinear` per targeted (layer, projection).
///
/// Every A, e and B lives in ONE flat parameter buffer (sites sorted by layer then projection; per site A, e, B),
/// with gradients in the same layout, so AdamW, clipping and checkpoints treat the set as one array. A set being
/// trained holds all `init_r` triplets of every module (pruned ones have e = 0, as PEFT keeps them); saving writes
/// only the triplets `rank_pattern` keeps, as PEFT's `resize_state_dict_by_rank_pattern`. A loaded PEFT adapter
/// has the pruned shapes.
public final class AdaLoRASet: TrainableAdapters {
    /// The PEFT configuration; its `rank_pattern` follows the allocator during training.
    public private(set) var config: AdaLoRAConfig
    public let dims: ModelDimensions
    public let adapters: [SVDLinear]
    public let parameters: Tensor
    public let gradients: Tensor
    /// Offsets of each adapter's A, e and B in `parameters`.
    let offsets: [(a: Int, e: Int, b: Int)]
    /// The rank allocator, present while training (`startTraining`).
    public private(set) var allocator: RankAllocator?

    public var multiplier: Float = 1 {
        didSet { for adapter in adapters { adapter.multiplier = multiplier } }
    }
    public var trainable = true {
        didSet { for adapter in adapters { adapter.trainable = trainable } }
    }

    public static let weightsFileName = AdapterSet.weightsFileName
    /// The checkpoint file with the unpruned parameters and the allocator's averages.
    public static let stateFileName = "adalora_state.safetensors"

    /// An r×r scratch for the regulariser (r = the largest rank).
    private let gram: Tensor

    // MARK: building

    /// New adapters with all `init_r` triplets, initialised as PEFT: e = 0, A and B ~ N(0, 0.02²), from `seed`.
    public convenience init(config: AdaLoRAConfig, dims: ModelDimensions, seed: UInt64 = 0) throws {
        try config.validate()
        var config = config
        config.rankPattern = nil
        let sites = try config.sites(layerCount: dims.layers)
        try self.init(config: config, sites: sites, ranks: sites.map { _ in config.initR }, dims: dims, seed: seed)
        var rng = RandomGenerator(seed: seed)
        for adapter in adapters {
            rng.fillNormal(adapter.a.data, count: adapter.a.count, std: 0.02)
            rng.fillNormal(adapter.b.data, count: adapter.b.count, std: 0.02)
            adapter.e.zero()
        }
    }

    private init(config: AdaLoRAConfig, sites: [AdapterSite], ranks: [Int], dims: ModelDimensions, seed: UInt64) throws {
        guard !sites.isEmpty else { throw LoRAKitError("the adapter targets no module: it would be empty") }
        self.config = config
        self.dims = dims
        var total = 0
        var offsets: [(a: Int, e: Int, b: Int)] = []
        for (site, rank) in zip(sites, ranks) {
            let f = site.projection.features(dims)
            offsets.append((total, total + rank * f.inFeatures, total + rank * f.inFeatures + rank))
            total += rank * (f.inFeatures + 1 + f.outFeatures)
        }
        parameters = Tensor(shape: [total])
        gradients = Tensor(shape: [total])
        var seeds = RandomGenerator(seed: seed ^ 0xD2B7_4407_B1CE_6E93)
        let scratch = LoRAScratch()
        var adapters: [SVDLinear] = []
        for ((site, rank), offset) in zip(zip(sites, ranks), offsets) {
            func view(_ base: Tensor, _ shape: [Int], at offset: Int) -> Tensor {
                Tensor(borrowing: base.data + offset, shape: shape, owner: base)
            }
            let f = site.projection.features(dims)
            let aShape = [rank, f.inFeatures], eShape = [rank], bShape = [f.outFeatures, rank]
            adapters.append(SVDLinear(
                site: site,
                a: view(parameters, aShape, at: offset.a), e: view(parameters, eShape, at: offset.e),
                b: view(parameters, bShape, at: offset.b),
                aGradient: view(gradients, aShape, at: offset.a), eGradient: view(gradients, eShape, at: offset.e),
                bGradient: view(gradients, bShape, at: offset.b),
                scale: config.scale, dropout: Float(config.loraDropout), dropoutSeed: seeds.next(), scratch: scratch))
        }
        self.adapters = adapters
        self.offsets = offsets
        let maxRank = ranks.max() ?? 0
        gram = Tensor(shape: [maxRank, maxRank])
    }

    /// Makes the set trainable under `schedule` for a run of `totalSteps` (PEFT's `total_step`); the schedule is
    /// written into the config. The set must hold every triplet (not a pruned PEFT adapter).
    public func startTraining(schedule: AdaLoRASchedule, totalSteps: Int) throws {
        try schedule.validate(initialRank: config.initR, totalSteps: totalSteps)
        guard adapters.allSatisfy({ $0.rank == config.initR }) else {
            throw LoRAKitError("this AdaLoRA adapter was pruned (its rank_pattern drops triplets); training continues only from an adapter with all init_r = \(config.initR) triplets")
        }
        config.targetR = schedule.targetRank
        config.tinit = schedule.tinit
        config.tfinal = schedule.tfinal
        config.deltaT = schedule.deltaT
        config.beta1 = schedule.beta1
        config.beta2 = schedule.beta2
        config.orthRegWeight = schedule.orthRegWeight
        config.totalStep = totalSteps
        allocator = RankAllocator(set: self, schedule: schedule, totalSteps: totalSteps)
    }

    // MARK: use

    public func attach(to model: LlamaModel) throws {
        guard model.dims == dims else {
            throw LoRAKitError("AdaLoRA adapter does not fit the model: it was built for \(dims.layers) layers, hidden \(dims.dim); the model has \(model.dims.layers) layers, hidden \(model.dims.dim)")
        }
        for adapter in adapters { model.attach(adapter, layer: adapter.site.layer, projection: adapter.site.projection) }
    }

    public func zeroGradients() { gradients.zero() }

    public var dropoutStates: [RandomGenerator] { adapters.map(\.dropoutRNG) }

    public func restoreDropoutStates(_ states: [RandomGenerator]) throws {
        guard states.count == adapters.count else {
            throw LoRAKitError("checkpoint holds \(states.count) dropout generator states, the AdaLoRA adapter has \(adapters.count) modules")
        }
        for (adapter, state) in zip(adapters, states) { adapter.dropoutRNG = state }
    }

    public func setDropout(_ probability: Float) {
        for adapter in adapters { adapter.dropout = probability }
        config.loraDropout = Double(probability)
    }

    public var inertWarning: String? {
        let allZero = adapters.allSatisfy { adapter in (0..<adapter.rank).allSatisfy { adapter.e[$0] == 0 } }
        return allZero ? "every lora_E is still zero: the AdaLoRA adapter does not change the model (too few steps or too low --lr?)" : nil
    }

    /// The rank each module keeps under the current `rank_pattern`, by module name.
    public var keptRanks: [String: Int] {
        Dictionary(uniqueKeysWithValues: adapters.map { adapter in
            (adapter.site.moduleName, adapter.rank == config.initR
                ? config.keptTriplets(for: adapter.site.moduleName).filter { $0 }.count : adapter.rank)
        })
    }

    /// The budget the adapter ends with: triplets kept over all modules, the parameters they hold (A row, e, B
    /// column each), and the parameters of plain LoRA at rank `target_r` on the same modules — the comparison at
    /// an equal rank budget (PEFT's budget counts triplets).
    public var budgetSummary: (triplets: Int, parameters: Int, loraParameters: Int) {
        var triplets = 0, parameters = 0, lora = 0
        for adapter in adapters {
            let kept = keptRanks[adapter.site.moduleName] ?? adapter.rank
            triplets += kept
            parameters += kept * (adapter.inFeatures + 1 + adapter.outFeatures)
            lora += config.targetR * (adapter.inFeatures + adapter.outFeatures)
        }
        return (triplets, parameters, lora)
    }

    /// Sets the allocator's rank pattern (called by `RankAllocator`).
    func setRankPattern(_ pattern: [String: [Bool]]) { config.rankPattern = pattern }

    // MARK: regularisation

    /// PEFT's orthogonal regulariser: R = mean over every A and B of ‖A Aᵀ − I‖_F and ‖BᵀB − I‖_F; adds
    /// `orth_reg_weight` · ∂R to the gradients and returns `orth_reg_weight` · R (PEFT adds it to the loss).
    public func addRegularization() -> Double {
        let weight = Float(config.orthRegWeight)
        guard weight > 0 else { return 0 }
        let count = Float(2 * adapters.count)
        var total = 0.0
        for adapter in adapters where adapter.rank > 0 {
            let r = adapter.rank, c = gram.data
            // C = A Aᵀ − I: (r, in)·(in, r) -> (r, r); ‖C‖ = ‖A Aᵀ − I‖_F
            GEMM.sgemm(transA: false, transB: true, m: r, n: r, k: adapter.inFeatures, a: adapter.a.data,
                       lda: adapter.inFeatures, b: adapter.a.data, ldb: adapter.inFeatures, beta: 0, c: c, ldc: r)
            var norm = Self.subtractIdentityAndNorm(c, r)
            total += Double(norm)
            if norm > 0 {
                // ∂‖AAᵀ − I‖/∂A = 2 (AAᵀ − I) A / ‖AAᵀ − I‖ (C symmetric): (r, r)·(r, in) -> (r, in)
                GEMM.sgemm(transA: false, transB: false, m: r, n: adapter.inFeatures, k: r, alpha: 2 * weight / (count * norm),
                           a: c, lda: r, b: adapter.a.data, ldb: adapter.inFeatures, beta: 1,
                           c: adapter.aGradient.data, ldc: adapter.inFeatures)
            }
            // C = BᵀB − I: (r, out)·(out, r) -> (r, r)
            GEMM.sgemm(transA: true, transB: false, m: r, n: r, k: adapter.outFeatures, a: adapter.b.data, lda: r,
                       b: adapter.b.data, ldb: r, beta: 0, c: c, ldc: r)
            norm = Self.subtractIdentityAndNorm(c, r)
            total += Double(norm)
            if norm > 0 {
                // ∂‖BᵀB − I‖/∂B = 2 B (BᵀB − I) / ‖BᵀB − I‖: (out, r)·(r, r) -> (out, r)
                GEMM.sgemm(transA: false, transB: false, m: adapter.outFeatures, n: r, k: r, alpha: 2 * weight / (count * norm),
                           a: adapter.b.data, lda: r, b: c, ldb: r, beta: 1, c: adapter.bGradient.data, ldc: r)
            }
        }
        return Double(weight) * total / Double(count)
    }

    /// C −= I in place (C is r×r); returns ‖C‖_F.
    private static func subtractIdentityAndNorm(_ c: UnsafeMutablePointer<Float>, _ r: Int) -> Float {
        for i in 0..<r { c[i * r + i] -= 1 }
        var sum = 0.0
        for i in 0..<(r * r) { sum += Double(c[i]) * Double(c[i]) }
        return Float(sum.squareRoot())
    }

    /// The rank allocator's step (PEFT's `update_and_allocate(global_step)`), after the optimizer's update.
    public func afterOptimizerStep(_ stepIndex: Int) {
        allocator?.updateAndAllocate(globalStep: stepIndex)
    }

    // MARK: files

    /// Writes PEFT's `adapter_config.json` and `adapter_model.safetensors`, keeping only the triplets
    /// `rank_pattern` keeps (PEFT's `resize_state_dict_by_rank_pattern`).
    public func save(to directory: String, baseModelPath: String?) throws {
        try AdapterDirectory.create(directory)
        var tensors: [(name: String, tensor: Tensor)] = []
        for adapter in adapters {
            let module = adapter.site.moduleName
            let kept = adapter.rank == config.initR ? config.keptTriplets(for: module) : Array(repeating: true, count: adapter.rank)
            let rows = kept.indices.filter { kept[$0] }
            let a = Tensor(shape: [rows.count, adapter.inFeatures])
            let e = Tensor(shape: [rows.count, 1])
            let b = Tensor(shape: [adapter.outFeatures, rows.count])
            for (k, i) in rows.enumerated() {
                (a.data + k * adapter.inFeatures).update(from: adapter.a.data + i * adapter.inFeatures, count: adapter.inFeatures)
                e.data[k] = adapter.e.data[i]
                for o in 0..<adapter.outFeatures { b.data[o * rows.count + k] = adapter.b.data[o * adapter.rank + i] }
            }
            let prefix = "base_model.model.\(module)"
            tensors += [(prefix + ".lora_A", a), (prefix + ".lora_B", b), (prefix + ".lora_E", e)]
        }
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"],
                                    to: LoRAConfig.joinPath(directory, Self.weightsFileName))
        var written = config
        written.inferenceMode = true
        if let baseModelPath { written.baseModelNameOrPath = baseModelPath }
        try written.write(to: directory)
    }

    /// Writes the unpruned parameters and the allocator's averages (`adalora_state.safetensors`).
    public func saveTrainingState(to directory: String) throws {
        var tensors: [(name: String, tensor: Tensor)] = [("parameters", parameters)]
        if let allocator {
            tensors.append(("exp_avg_ipt", allocator.expAvgIpt))
            tensors.append(("exp_avg_unc", allocator.expAvgUnc))
        }
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: LoRAConfig.joinPath(directory, Self.stateFileName))
    }

    /// Reads a PEFT AdaLoRA adapter directory (pruned shapes from `rank_pattern`) for a base of `dims`.
    public static func load(directory: String, dims: ModelDimensions, seed: UInt64 = 0) throws -> AdaLoRASet {
        let configPath = LoRAConfig.joinPath(directory, LoRAConfig.fileName)
        let config = try AdaLoRAConfig.load(path: configPath)
        let sites: [AdapterSite]
        do { sites = try config.sites(layerCount: dims.layers) } catch let error as LoRAKitError {
            throw LoRAKitError.file(configPath, error.message)
        }
        let ranks = sites.map { config.keptTriplets(for: $0.moduleName).filter { $0 }.count }
        let set = try AdaLoRASet(config: config, sites: sites, ranks: ranks, dims: dims, seed: seed)
        let weightsPath = LoRAConfig.joinPath(directory, weightsFileName)
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            throw LoRAKitError.file(weightsPath, "does not exist (the adapter's weights are missing)")
        }
        let file = try SafeTensorsFile(path: weightsPath)
        var expected = Set<String>()
        for adapter in set.adapters {
            let prefix = "base_model.model.\(adapter.site.moduleName)"
            for (suffix, target, shape) in [(".lora_A", adapter.a, adapter.a.shape), (".lora_E", adapter.e, [adapter.rank, 1]),
                                            (".lora_B", adapter.b, adapter.b.shape)] {
                let name = prefix + suffix
                expected.insert(name)
                guard let info = file.info(name) else {
                    throw LoRAKitError.file(weightsPath, "has no tensor \(name), which adapter_config.json's target_modules need")
                }
                guard info.shape == shape else {
                    throw LoRAKitError.file(weightsPath, "tensor \(name) has shape \(info.shape), expected \(shape) (init_r \(config.initR), \(adapter.rank) triplets kept by rank_pattern)")
                }
                let values = try file.tensor(name)
                for i in 0..<values.count where !values[i].isFinite {
                    throw LoRAKitError.file(weightsPath, "tensor \(name) holds a non-finite value (\(values[i])) at index \(i)")
                }
                if values.count > 0 { target.data.update(from: values.data, count: values.count) }
            }
        }
        if let unused = file.names.first(where: { !expected.contains($0) }) {
            throw LoRAKitError.file(weightsPath, "holds tensor \(unused), which LoRAKit does not use (only lora_A, lora_E and lora_B of the targeted modules)")
        }
        return set
    }

    /// Rebuilds a training set from a checkpoint written by `save` and `saveTrainingState`: all triplets, the
    /// rank pattern and the allocator's averages, exactly as they were.
    public static func resume(directory: String, dims: ModelDimensions, seed: UInt64,
                              schedule: AdaLoRASchedule, totalSteps: Int) throws -> AdaLoRASet {
        let configPath = LoRAConfig.joinPath(directory, LoRAConfig.fileName)
        var config = try AdaLoRAConfig.load(path: configPath)
        let pattern = config.rankPattern
        config.rankPattern = nil
        let sites = try config.sites(layerCount: dims.layers)
        let set = try AdaLoRASet(config: config, sites: sites, ranks: sites.map { _ in config.initR }, dims: dims, seed: seed)
        try set.startTraining(schedule: schedule, totalSteps: totalSteps)
        set.config.rankPattern = pattern
        let statePath = LoRAConfig.joinPath(directory, stateFileName)
        let file = try SafeTensorsFile(path: statePath)
        var targets: [(String, Tensor)] = [("parameters", set.parameters)]
        if let allocator = set.allocator {
            targets += [("exp_avg_ipt", allocator.expAvgIpt), ("exp_avg_unc", allocator.expAvgUnc)]
        }
        for (name, target) in targets {
            let tensor = try file.tensor(name)
            guard tensor.count == target.count else {
                throw LoRAKitError.file(statePath, "tensor \(name) has \(tensor.count) values, the AdaLoRA adapter has \(target.count) parameters")
            }
            target.copy(from: tensor)
        }
        return set
    }
}

extension AdaLoRASet {
    public var mergeProblem: String? {
        if adapters.allSatisfy({ $0.rank == 0 }) { return "rank_pattern keeps no triplet" }
        let zero = adapters.allSatisfy { m in (0..<m.e.count).allSatisfy { m.e[$0] == 0 } || (0..<m.b.count).allSatisfy { m.b[$0] == 0 } }
        return zero ? "every lora_E or lora_B is zero, so it changes nothing (an untrained adapter?)" : nil
    }

    public func adapts(layer: Int, projection: Projection) -> Bool {
        adapters.contains { $0.site == AdapterSite(layer: layer, projection: projection) && $0.rank > 0 }
    }

    /// weight += m·s · B·diag(E)·A (PEFT's merge of an SVDLinear).
    public func addMergedUpdate(layer: Int, projection: Projection, to weight: Tensor, base: Tensor) {
        for module in adapters where module.site == AdapterSite(layer: layer, projection: projection) {
            module.addDelta(to: weight)
        }
    }
}
