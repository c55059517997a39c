import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// PEFT's `adapter_config.json` for an AdaLoRA adapter (`peft_type` `"ADALORA"`, PEFT's `AdaLoraConfig`).
///
/// AdaLoRA adapts a projection by `s · B diag(E) A x` with `s = lora_alpha / (init_r + 1e-5)` (PEFT divides by the
/// initial rank, `ranknum`, even after pruning). Its `rank_pattern` differs from LoRA's: per module
/// (`model.layers.0.self_attn.q_proj.lora_E`) a list of `init_r` booleans saying which singular triplets were
/// kept; the saved tensors hold only the kept ones. Reading ignores keys it does not know and refuses the same
/// PEFT features as `LoRAConfig` (they would make PEFT compute another model).
public struct AdaLoRAConfig: Codable, Equatable, Sendable {
    public static let peftTypeName = "ADALORA"

    public var peftType: String
    public var taskType: String?
    /// LoRA's `r`, unused by AdaLoRA (PEFT warns when it is not its default 8); kept to write back what was read.
    public var r: Int
    public var loraAlpha: Double
    public var loraDropout: Double
    public var targetModules: LoRAConfig.TargetModules
    public var bias: String
    public var layersToTransform: [Int]?
    public var initLoraWeights: LoRAConfig.InitLoRAWeights
    public var inferenceMode: Bool
    public var baseModelNameOrPath: String?
    /// The initial rank of every module.
    public var initR: Int
    /// The average rank the budget ends at.
    public var targetR: Int
    public var tinit: Int
    public var tfinal: Int
    public var deltaT: Int
    public var beta1: Double
    public var beta2: Double
    public var orthRegWeight: Double
    public var totalStep: Int?
    /// Per module (`<module>.lora_E`), which of the `init_r` triplets are kept; nil before any allocation.
    public var rankPattern: [String: [Bool]]?

    /// A configuration with PEFT's defaults for everything not given.
    public init(targets: [Projection], layers: [Int]?, initR: Int, targetR: Int, loraAlpha: Double,
                loraDropout: Double = 0, schedule: AdaLoRASchedule, totalStep: Int) {
        peftType = Self.peftTypeName
        taskType = "CAUSAL_LM"
        r = 8
        self.loraAlpha = loraAlpha
        self.loraDropout = loraDropout
        targetModules = .list(targets.sorted().map(\.hfName))
        bias = "none"
        layersToTransform = layers
        initLoraWeights = .flag(true)
        inferenceMode = false
        baseModelNameOrPath = nil
        self.initR = initR
        self.targetR = targetR
        tinit = schedule.tinit
        tfinal = schedule.tfinal
        deltaT = schedule.deltaT
        beta1 = schedule.beta1
        beta2 = schedule.beta2
        orthRegWeight = schedule.orthRegWeight
        self.totalStep = totalStep
        rankPattern = nil
    }

    enum CodingKeys: String, CodingKey {
        case peftType = "peft_type", taskType = "task_type", r, loraAlpha = "lora_alpha"
        case loraDropout = "lora_dropout", targetModules = "target_modules", bias
        case layersToTransform = "layers_to_transform", initLoraWeights = "init_lora_weights"
        case inferenceMode = "inference_mode", baseModelNameOrPath = "base_model_name_or_path"
        case initR = "init_r", targetR = "target_r", tinit, tfinal, deltaT, beta1, beta2
        case orthRegWeight = "orth_reg_weight", totalStep = "total_step", rankPattern = "rank_pattern"
        case useDora = "use_dora"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        peftType = try c.decodeIfPresent(String.self, forKey: .peftType) ?? ""
        taskType = try c.decodeIfPresent(String.self, forKey: .taskType)
        r = try c.decodeIfPresent(Int.self, forKey: .r) ?? 8
        loraAlpha = try c.decodeIfPresent(Double.self, forKey: .loraAlpha) ?? 8
        loraDropout = try c.decodeIfPresent(Double.self, forKey: .loraDropout) ?? 0
        guard let targets = try c.decodeIfPresent(LoRAConfig.TargetModules.self, forKey: .targetModules) else {
            throw LoRAKitError("has no target_modules")
        }
        targetModules = targets
        bias = try c.decodeIfPresent(String.self, forKey: .bias) ?? "none"
        if try !c.contains(.layersToTransform) || c.decodeNil(forKey: .layersToTransform) {
            layersToTransform = nil
        } else if let single = try? c.decode(Int.self, forKey: .layersToTransform) {
            layersToTransform = [single]
        } else {
            let list = try c.decode([Int].self, forKey: .layersToTransform)
            layersToTransform = list.isEmpty ? nil : list
        }
        initLoraWeights = try c.decodeIfPresent(LoRAConfig.InitLoRAWeights.self, forKey: .initLoraWeights) ?? .flag(true)
        inferenceMode = try c.decodeIfPresent(Bool.self, forKey: .inferenceMode) ?? false
        baseModelNameOrPath = try c.decodeIfPresent(String.self, forKey: .baseModelNameOrPath)
        // PEFT's AdaLoraConfig defaults.
        initR = try c.decodeIfPresent(Int.self, forKey: .initR) ?? 12
        targetR = try c.decodeIfPresent(Int.self, forKey: .targetR) ?? 8
        tinit = try c.decodeIfPresent(Int.self, forKey: .tinit) ?? 0
        tfinal = try c.decodeIfPresent(Int.self, forKey: .tfinal) ?? 0
        deltaT = try c.decodeIfPresent(Int.self, forKey: .deltaT) ?? 1
        beta1 = try c.decodeIfPresent(Double.self, forKey: .beta1) ?? 0.85
        beta2 = try c.decodeIfPresent(Double.self, forKey: .beta2) ?? 0.85
        orthRegWeight = try c.decodeIfPresent(Double.self, forKey: .orthRegWeight) ?? 0.5
        totalStep = try c.decodeIfPresent(Int.self, forKey: .totalStep)
        rankPattern = try c.decodeIfPresent([String: [Bool]].self, forKey: .rankPattern)
        if try c.decodeIfPresent(Bool.self, forKey: .useDora) == true {
            throw LoRAKitError("use_dora is true: AdaLoRA does not combine with DoRA (PEFT refuses it too)")
        }
        _ = try LoRAConfig.refuseUnsupportedFields(decoder)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(peftType, forKey: .peftType)
        try c.encode(taskType, forKey: .taskType)
        try c.encode(r, forKey: .r)
        try c.encode(JSONValue.number(loraAlpha), forKey: .loraAlpha)
        try c.encode(loraDropout, forKey: .loraDropout)
        try c.encode(targetModules, forKey: .targetModules)
        try c.encode(bias, forKey: .bias)
        try c.encode(layersToTransform, forKey: .layersToTransform)
        try c.encode(initLoraWeights, forKey: .initLoraWeights)
        try c.encode(inferenceMode, forKey: .inferenceMode)
        try c.encode(baseModelNameOrPath, forKey: .baseModelNameOrPath)
        try c.encode(initR, forKey: .initR)
        try c.encode(targetR, forKey: .targetR)
        try c.encode(tinit, forKey: .tinit)
        try c.encode(tfinal, forKey: .tfinal)
        try c.encode(deltaT, forKey: .deltaT)
        try c.encode(beta1, forKey: .beta1)
        try c.encode(beta2, forKey: .beta2)
        try c.encode(orthRegWeight, forKey: .orthRegWeight)
        try c.encode(totalStep, forKey: .totalStep)
        try c.encode(rankPattern, forKey: .rankPattern)
        try c.encode(false, forKey: .useDora)
    }

    /// The schedule of the rank allocator as this config gives it.
    public var schedule: AdaLoRASchedule {
        AdaLoRASchedule(targetRank: targetR, tinit: tinit, tfinal: tfinal, deltaT: deltaT, beta1: beta1, beta2: beta2,
                        orthRegWeight: orthRegWeight)
    }

    /// PEFT's output scale: `lora_alpha / (ranknum + 1e-5)` with ranknum the initial rank (alpha 0 means init_r).
    public var scale: Float {
        let alpha = loraAlpha > 0 ? Float(loraAlpha) : Float(initR)
        return alpha / (Float(initR) + 1e-5)
    }

    /// The key of `moduleName` in `rank_pattern`.
    public static func patternKey(_ moduleName: String) -> String { moduleName + ".lora_E" }

    /// Which triplets of the module are kept (`init_r` values, all true without a pattern entry).
    public func keptTriplets(for moduleName: String) -> [Bool] {
        rankPattern?[Self.patternKey(moduleName)] ?? Array(repeating: true, count: initR)
    }

    // MARK: validation

    /// Checks everything LoRAKit needs before any tensor is read; errors carry no file prefix.
    public func validate() throws {
        guard peftType == Self.peftTypeName else {
            throw LoRAKitError("peft_type is \"\(peftType)\", expected \"\(Self.peftTypeName)\"")
        }
        guard initR > 0 else { throw LoRAKitError("init_r is \(initR), expected a positive rank") }
        guard targetR >= 0 else { throw LoRAKitError("target_r is \(targetR), expected a rank ≥ 0") }
        guard loraAlpha >= 0, loraAlpha.isFinite else {
            throw LoRAKitError("lora_alpha is \(loraAlpha), expected a number ≥ 0")
        }
        guard loraDropout >= 0, loraDropout < 1 else {
            throw LoRAKitError("lora_dropout is \(loraDropout), expected a value in [0, 1)")
        }
        guard bias == "none" else {
            throw LoRAKitError("bias is \"\(bias)\"; LoRAKit supports adapters without biases (\"none\") only")
        }
        guard orthRegWeight >= 0, orthRegWeight.isFinite else {
            throw LoRAKitError("orth_reg_weight is \(orthRegWeight), expected a number ≥ 0")
        }
        if let totalStep {
            // PEFT's AdaLoraConfig checks these when the config is created (and so when it is loaded).
            guard totalStep > 0 else { throw LoRAKitError("total_step is \(totalStep), expected a positive step count") }
            guard tinit < totalStep - tfinal else {
                throw LoRAKitError("tinit \(tinit) and tfinal \(tfinal) leave no budgeting phase in total_step \(totalStep) (need tinit < total_step − tfinal)")
            }
        }
        for (key, kept) in (rankPattern ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard key.hasSuffix(".lora_E") else {
                throw LoRAKitError("rank_pattern key '\(key)' is not an AdaLoRA module key (<module>.lora_E)")
            }
            guard kept.count == initR else {
                throw LoRAKitError("rank_pattern gives \(key) \(kept.count) entries, expected init_r = \(initR)")
            }
        }
        if let layers = layersToTransform, let bad = layers.first(where: { $0 < 0 }) {
            throw LoRAKitError("layers_to_transform lists \(bad), expected layer indices ≥ 0")
        }
    }

    /// The modules of a `layerCount`-block model this config adapts, as `LoRAConfig.sites` finds them; every
    /// `rank_pattern` key must name one of them.
    public func sites(layerCount: Int) throws -> [AdapterSite] {
        var targeting = LoRAConfig(targetModules: targetModules, layersToTransform: layersToTransform)
        targeting.r = initR
        let sites = try targeting.sites(layerCount: layerCount)
        let known = Set(sites.map { Self.patternKey($0.moduleName) })
        if let unknown = (rankPattern ?? [:]).keys.sorted().first(where: { !known.contains($0) }) {
            throw LoRAKitError("rank_pattern names \(unknown), which target_modules and layers_to_transform do not adapt")
        }
        return sites
    }

    // MARK: files

    /// Reads and validates a PEFT AdaLoRA adapter config file; every error names the file.
    public static func load(path: String) throws -> AdaLoRAConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoRAKitError.file(path, "cannot be read (a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors)")
        }
        let config: AdaLoRAConfig
        do { config = try JSONDecoder().decode(AdaLoRAConfig.self, from: data) } catch let error as LoRAKitError {
            throw LoRAKitError.file(path, error.message)
        } catch let error as DecodingError {
            throw LoRAKitError.file(path, "is not a valid AdaLoRA config: \(error)")
        } catch {
            throw LoRAKitError.file(path, "is not valid JSON: \(error.localizedDescription)")
        }
        do { try config.validate() } catch let error as LoRAKitError { throw LoRAKitError.file(path, error.message) }
        return config
    }

    /// Writes `directory/adapter_config.json` atomically, sorted keys as PEFT (the directory must exist).
    public func write(to directory: String) throws {
        try validate()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(UInt8(ascii: "\n"))
        try AtomicFile.write(data, to: LoRAConfig.joinPath(directory, LoRAConfig.fileName))
    }
}

/// AdaLoRA's training hyper-parameters (PEFT's names in comments), as `lora finetune --adalora` takes them.
public struct AdaLoRASchedule: Codable, Equatable, Sendable {
    /// `target_r`: the average rank the budget ends at.
    public var targetRank: Int
    /// `tinit`: steps of warm-up at the full budget.
    public var tinit: Int = 0
    /// `tfinal`: final steps at the target budget with the pattern fixed.
    public var tfinal: Int = 0
    /// `deltaT`: steps between two allocations.
    public var deltaT: Int = 1
    /// `beta1`: EMA factor of the sensitivity.
    public var beta1: Double = 0.85
    /// `beta2`: EMA factor of the uncertainty.
    public var beta2: Double = 0.85
    /// `orth_reg_weight`: weight of the orthogonality regulariser in the loss.
    public var orthRegWeight: Double = 0.5

    public init(targetRank: Int, tinit: Int = 0, tfinal: Int = 0, deltaT: Int = 1, beta1: Double = 0.85,
                beta2: Double = 0.85, orthRegWeight: Double = 0.5) {
        self.targetRank = targetRank
        self.tinit = tinit
        self.tfinal = tfinal
        self.deltaT = deltaT
        self.beta1 = beta1
        self.beta2 = beta2
        self.orthRegWeight = orthRegWeight
    }

    /// Checks the values against the initial rank and the run's length (flag names in the messages).
    public func validate(initialRank: Int, totalSteps: Int?) throws {
        guard targetRank >= 1 else { throw LoRAKitError("--target-rank must be at least 1, got \(targetRank)") }
        guard targetRank < initialRank else {
            throw LoRAKitError("--target-rank \(targetRank) must be below --rank \(initialRank) (AdaLoRA's initial rank): AdaLoRA prunes from --rank down to --target-rank")
        }
        guard tinit >= 0, tfinal >= 0 else { throw LoRAKitError("--tinit and --tfinal must be ≥ 0, got \(tinit) and \(tfinal)") }
        guard deltaT >= 1 else { throw LoRAKitError("--delta-t must be at least 1, got \(deltaT)") }
        guard beta1 > 0, beta1 < 1 else { throw LoRAKitError("--beta1 must be in (0, 1), got \(beta1)") }
        guard beta2 > 0, beta2 < 1 else { throw LoRAKitError("--beta2 must be in (0, 1), got \(beta2)") }
        guard orthRegWeight >= 0, orthRegWeight.isFinite else {
            throw LoRAKitError("--orth-reg-weight must be ≥ 0, got \(orthRegWeight)")
        }
        if let totalSteps, tinit >= totalSteps - tfinal {
            throw LoRAKitError("--tinit \(tinit) and --tfinal \(tfinal) leave no budgeting phase in a run of \(totalSteps) steps (need tinit < steps − tfinal)")
        }
    }
}
