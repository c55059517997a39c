import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// One place an adapter goes: a projection of one block, with PEFT's module name for it.
public struct AdapterSite: Equatable, Hashable, Sendable, Comparable {
    public let layer: Int
    public let projection: Projection

    public init(layer: Int, projection: Projection) {
        self.layer = layer
        self.projection = projection
    }

    /// The module name PEFT matches patterns against: `model.layers.3.self_attn.q_proj`.
    public var moduleName: String { "model.layers.\(layer).\(projection.modulePath)" }

    /// The tensor names in `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` and `…lora_B.weight`.
    public var tensorNameA: String { "base_model.model.\(moduleName).lora_A.weight" }
    public var tensorNameB: String { "base_model.model.\(moduleName).lora_B.weight" }
    /// DoRA's magnitude, [out]: `base_model.model.<module>.lora_magnitude_vector` (PEFT drops `.default.weight`).
    public var tensorNameMagnitude: String { "base_model.model.\(moduleName).lora_magnitude_vector" }

    public static func < (a: AdapterSite, b: AdapterSite) -> Bool {
        a.layer != b.layer ? a.layer < b.layer : a.projection < b.projection
    }
}

/// PEFT's `adapter_config.json` for a LoRA adapter (DESIGN §2).
///
/// Reading ignores keys LoRAKit does not know, but refuses keys that are set to something that would make PEFT
/// compute a different model (biases, modules to save, …): silently dropping them would give wrong outputs.
/// `use_dora` is read and written: a DoRA adapter also carries `lora_magnitude_vector` tensors (DoRA.swift).
/// Writing uses sorted keys and PEFT's names, so PEFT loads the result.
public struct LoRAConfig: Codable, Equatable, Sendable {
    /// `target_modules`: a list of module names (matched as dotted suffixes), or one string.
    public enum TargetModules: Codable, Equatable, Sendable {
        case list([String])
        /// PEFT treats a string as a regular expression fully matching the module name; LoRAKit accepts a string
        /// that is a single module name (or `all-linear`) and refuses other regular expressions.
        case string(String)

        public init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let list = try? container.decode([String].self) { self = .list(list); return }
            if let text = try? container.decode(String.self) { self = .string(text); return }
            throw DecodingError.typeMismatch(TargetModules.self, .init(codingPath: decoder.codingPath,
                debugDescription: "target_modules must be a list of module names or a string"))
        }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .list(let names): try container.encode(names)
            case .string(let text): try container.encode(text)
            }
        }
    }

    /// `init_lora_weights`: `true` (PEFT's default: Kaiming-uniform A, zero B), `false`, or a method name.
    public enum InitLoRAWeights: Codable, Equatable, Sendable {
        case flag(Bool)
        case method(String)

        public init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let flag = try? container.decode(Bool.self) { self = .flag(flag); return }
            if let name = try? container.decode(String.self) { self = .method(name); return }
            throw DecodingError.typeMismatch(InitLoRAWeights.self, .init(codingPath: decoder.codingPath,
                debugDescription: "init_lora_weights must be true, false or a method name such as \"gaussian\""))
        }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .flag(let flag): try container.encode(flag)
            case .method(let name): try container.encode(name)
            }
        }
    }

    public static let fileName = "adapter_config.json"

    public var peftType: String
    public var taskType: String?
    /// Default rank.
    public var r: Int
    /// Default alpha; the scale is alpha / r (alpha / √r with rsLoRA).
    public var loraAlpha: Double
    public var loraDropout: Double
    public var targetModules: TargetModules
    public var bias: String
    public var useRslora: Bool
    public var useDora: Bool
    /// Per-module ranks: key → rank, the key matching a module name as PEFT's `get_pattern_key` does.
    public var rankPattern: [String: Int]
    /// Per-module alphas, matched like `rankPattern`.
    public var alphaPattern: [String: Double]
    /// Blocks that get adapters; nil means all. PEFT writes an int or a list; LoRAKit writes a list.
    public var layersToTransform: [Int]?
    public var initLoraWeights: InitLoRAWeights
    public var inferenceMode: Bool
    public var baseModelNameOrPath: String?

    /// A configuration with PEFT's defaults for everything not given.
    public init(r: Int = 8, loraAlpha: Double = 8, loraDropout: Double = 0,
                targetModules: TargetModules = .list(["q_proj", "v_proj"]), useRslora: Bool = false,
                rankPattern: [String: Int] = [:], alphaPattern: [String: Double] = [:],
                layersToTransform: [Int]? = nil, initLoraWeights: InitLoRAWeights = .flag(true),
                inferenceMode: Bool = false, baseModelNameOrPath: String? = nil, useDora: Bool = false) {
        self.peftType = "LORA"
        self.taskType = "CAUSAL_LM"
        self.r = r
        self.loraAlpha = loraAlpha
        self.loraDropout = loraDropout
        self.targetModules = targetModules
        self.bias = "none"
        self.useRslora = useRslora
        self.useDora = useDora
        self.rankPattern = rankPattern
        self.alphaPattern = alphaPattern
        self.layersToTransform = layersToTransform
        self.initLoraWeights = initLoraWeights
        self.inferenceMode = inferenceMode
        self.baseModelNameOrPath = baseModelNameOrPath
    }

    /// A configuration for `targets` on `layers` (nil = all blocks), as `lora finetune` builds it.
    public init(targets: [Projection], layers: [Int]?, r: Int, loraAlpha: Double, loraDropout: Double = 0,
                useRslora: Bool = false, initLoraWeights: InitLoRAWeights = .flag(true), useDora: Bool = false) {
        self.init(r: r, loraAlpha: loraAlpha, loraDropout: loraDropout,
                  targetModules: .list(targets.sorted().map(\.hfName)), useRslora: useRslora,
                  layersToTransform: layers, initLoraWeights: initLoraWeights, useDora: useDora)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case peftType = "peft_type", taskType = "task_type", r, loraAlpha = "lora_alpha"
        case loraDropout = "lora_dropout", targetModules = "target_modules", bias, useRslora = "use_rslora"
        case useDora = "use_dora", rankPattern = "rank_pattern", alphaPattern = "alpha_pattern"
        case layersToTransform = "layers_to_transform", initLoraWeights = "init_lora_weights"
        case inferenceMode = "inference_mode", baseModelNameOrPath = "base_model_name_or_path"
    }

    /// Keys PEFT writes that change what the adapter computes. Unset (null, false, empty) they are harmless; set,
    /// LoRAKit refuses the adapter rather than compute something else than PEFT.
    static let refusedWhenSet: [(key: String, what: String)] = [
        ("modules_to_save", "fully trained extra modules (modules_to_save)"),
        ("fan_in_fan_out", "transposed (fan_in_fan_out) weights"),
        ("lora_bias", "LoRA biases (lora_bias)"),
        ("layer_replication", "layer replication"),
        ("exclude_modules", "exclude_modules"),
        ("target_parameters", "target_parameters"),
        ("trainable_token_indices", "trainable tokens"),
        ("use_qalora", "QA-LoRA"),
        ("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens)"),
        ("megatron_config", "Megatron layers"),
    ]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let peftType = try c.decodeIfPresent(String.self, forKey: .peftType) else {
            throw LoRAKitError("has no peft_type (is this a PEFT adapter_config.json?)")
        }
        self.peftType = peftType
        if peftType == AdaLoRAConfig.peftTypeName {
            // Its rank_pattern has another form; AdaLoRASet reads these adapters (lora forward, generate, eval).
            throw LoRAKitError("peft_type is ADALORA: an AdaLoRA adapter, which lora forward, generate and eval load, but this command reads LoRA adapters only")
        }
        taskType = try c.decodeIfPresent(String.self, forKey: .taskType)
        r = try c.decodeIfPresent(Int.self, forKey: .r) ?? 8
        loraAlpha = try c.decodeIfPresent(Double.self, forKey: .loraAlpha) ?? 8
        loraDropout = try c.decodeIfPresent(Double.self, forKey: .loraDropout) ?? 0
        guard let targets = try c.decodeIfPresent(TargetModules.self, forKey: .targetModules) else {
            throw LoRAKitError("has no target_modules")
        }
        targetModules = targets
        bias = try c.decodeIfPresent(String.self, forKey: .bias) ?? "none"
        useRslora = try c.decodeIfPresent(Bool.self, forKey: .useRslora) ?? false
        useDora = try c.decodeIfPresent(Bool.self, forKey: .useDora) ?? false
        rankPattern = try c.decodeIfPresent([String: Int].self, forKey: .rankPattern) ?? [:]
        alphaPattern = try c.decodeIfPresent([String: Double].self, forKey: .alphaPattern) ?? [:]
        if try !c.contains(.layersToTransform) || c.decodeNil(forKey: .layersToTransform) {
            layersToTransform = nil
        } else if let single = try? c.decode(Int.self, forKey: .layersToTransform) {
            layersToTransform = [single]
        } else {
            // PEFT treats an empty list like null: every layer.
            let list = try c.decode([Int].self, forKey: .layersToTransform)
            layersToTransform = list.isEmpty ? nil : list
        }
        initLoraWeights = try c.decodeIfPresent(InitLoRAWeights.self, forKey: .initLoraWeights) ?? .flag(true)
        inferenceMode = try c.decodeIfPresent(Bool.self, forKey: .inferenceMode) ?? false
        baseModelNameOrPath = try c.decodeIfPresent(String.self, forKey: .baseModelNameOrPath)

        let extra = try Self.refuseUnsupportedFields(decoder)
        if let value = try extra.decodeIfPresent(JSONValue.self, forKey: AnyKey("layers_pattern")), value.isSet,
           value != .string("layers"), value != .array([.string("layers")]) {
            throw LoRAKitError("layers_pattern is \(value): LLaMA models name their blocks \"layers\"")
        }
    }

    /// Throws when the config sets a field of `refusedWhenSet` (PEFT features LoRAKit does not implement); returns
    /// the container of every key, for further checks.
    static func refuseUnsupportedFields(_ decoder: Decoder) throws -> KeyedDecodingContainer<AnyKey> {
        let extra = try decoder.container(keyedBy: AnyKey.self)
        for (key, what) in refusedWhenSet {
            if let value = try extra.decodeIfPresent(JSONValue.self, forKey: AnyKey(key)), value.isSet {
                throw LoRAKitError("\(key) is set (\(value)): adapters with \(what) are not supported")
            }
        }
        return extra
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
        try c.encode(useRslora, forKey: .useRslora)
        try c.encode(useDora, forKey: .useDora)
        try c.encode(rankPattern, forKey: .rankPattern)
        try c.encode(alphaPattern.mapValues { JSONValue.number($0) }, forKey: .alphaPattern)
        // PEFT writes null for "every layer"; encodeIfPresent would drop the key.
        try c.encode(layersToTransform, forKey: .layersToTransform)
        try c.encode(initLoraWeights, forKey: .initLoraWeights)
        try c.encode(inferenceMode, forKey: .inferenceMode)
        try c.encode(baseModelNameOrPath, forKey: .baseModelNameOrPath)
    }

    // MARK: validation

    /// Checks everything LoRAKit needs before any tensor is read; errors carry no file prefix.
    public func validate() throws {
        guard peftType == "LORA" else {
            throw LoRAKitError("peft_type is \"\(peftType)\"; LoRAKit loads LORA adapters only")
        }
        guard r > 0 else { throw LoRAKitError("r is \(r), expected a positive rank") }
        guard loraAlpha > 0, loraAlpha.isFinite else {
            throw LoRAKitError("lora_alpha is \(loraAlpha), expected a positive number")
        }
        guard loraDropout >= 0, loraDropout < 1 else {
            throw LoRAKitError("lora_dropout is \(loraDropout), expected a value in [0, 1)")
        }
        guard bias == "none" else {
            throw LoRAKitError("bias is \"\(bias)\"; LoRAKit supports adapters without biases (\"none\") only")
        }
        for (key, rank) in rankPattern.sorted(by: { $0.key < $1.key }) {
            guard rank > 0 else { throw LoRAKitError("rank_pattern gives \(key) rank \(rank), expected a positive rank") }
            guard Self.patternRegex(key) != nil else {
                throw LoRAKitError("rank_pattern key '\(key)' is not a valid regular expression")
            }
        }
        for (key, alpha) in alphaPattern.sorted(by: { $0.key < $1.key }) {
            guard alpha > 0, alpha.isFinite else {
                throw LoRAKitError("alpha_pattern gives \(key) alpha \(alpha), expected a positive number")
            }
            guard Self.patternRegex(key) != nil else {
                throw LoRAKitError("alpha_pattern key '\(key)' is not a valid regular expression")
            }
        }
        if let layers = layersToTransform, let bad = layers.first(where: { $0 < 0 }) {
            throw LoRAKitError("layers_to_transform lists \(bad), expected layer indices ≥ 0")
        }
        _ = try targetNames()
        _ = try initialization()
    }

    /// The `target_modules` entries as module names (`all-linear` expanded).
    func targetNames() throws -> [String] {
        switch targetModules {
        case .list(let names):
            guard !names.isEmpty else { throw LoRAKitError("target_modules is empty: the adapter would adapt nothing") }
            return names
        case .string(let text):
            if text == "all-linear" { return Projection.allCases.map(\.hfName) }
            let plainName = !text.isEmpty && text.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." }
            guard plainName else {
                throw LoRAKitError("target_modules is the regular expression \"\(text)\"; regular expressions are not supported: list the module names instead, e.g. [\"q_proj\", \"v_proj\"]")
            }
            return [text]
        }
    }

    /// How the adapter's weights start when it is created (not loaded).
    public func initialization() throws -> AdapterInitialization {
        switch initLoraWeights {
        case .flag(true): return .kaiming
        case .flag(false): return .random
        case .method(let name) where name.lowercased() == "gaussian": return .gaussian
        case .method(let name):
            if let pissa = AdapterInitialization.pissa(method: name) { return pissa }
            throw LoRAKitError("init_lora_weights \"\(name)\" is not supported yet (supported: true, false, \"gaussian\", \"pissa\", \"pissa_niter_K\" for new adapters); methods such as OLoRA change the base weights too")
        }
    }

    // MARK: targeting

    /// The modules of a `layerCount`-block model this config adapts, sorted by (layer, projection).
    ///
    /// Follows PEFT's `check_target_module_exists`: an entry matches a module whose name equals it or ends with
    /// `.entry`; `layers_to_transform` then keeps the listed blocks (an entry equal to a full module name is kept
    /// whatever its block, as in PEFT). Unlike PEFT, every entry must match a module of this model, and every
    /// listed layer must exist: a typo is an error, not an adapter that silently does less.
    public func sites(layerCount: Int) throws -> [AdapterSite] {
        let names = try targetNames()
        if let layers = layersToTransform, let bad = layers.first(where: { $0 < 0 || $0 >= layerCount }) {
            throw LoRAKitError("layers_to_transform lists layer \(bad), but the base model has \(layerCount) layers (0-\(layerCount - 1))")
        }
        let all = (0..<layerCount).flatMap { l in Projection.allCases.map { AdapterSite(layer: l, projection: $0) } }
        var chosen = Set<AdapterSite>()
        for entry in names {
            var matched = false
            for site in all {
                let name = site.moduleName
                if name == entry {
                    chosen.insert(site); matched = true
                } else if name.hasSuffix("." + entry) {
                    matched = true
                    if layersToTransform?.contains(site.layer) ?? true { chosen.insert(site) }
                }
            }
            guard matched else {
                throw LoRAKitError("target_modules entry '\(entry)' matches no module of the base model (\(layerCount) layers; LoRAKit adapts q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")
            }
        }
        guard !chosen.isEmpty else { throw LoRAKitError("target_modules and layers_to_transform select no module") }
        return chosen.sorted()
    }

    /// The rank of the adapter on `moduleName` (`model.layers.3.self_attn.q_proj`): `rank_pattern` or `r`.
    public func rank(for moduleName: String) -> Int {
        Self.patternKey(rankPattern.keys, matching: moduleName).flatMap { rankPattern[$0] } ?? r
    }

    /// The alpha of the adapter on `moduleName`: `alpha_pattern` or `lora_alpha`.
    public func alpha(for moduleName: String) -> Double {
        Self.patternKey(alphaPattern.keys, matching: moduleName).flatMap { alphaPattern[$0] } ?? loraAlpha
    }

    /// The output scale of the adapter on `moduleName`: alpha / r, or alpha / √r with rsLoRA.
    public func scale(for moduleName: String) -> Float {
        let rank = Double(rank(for: moduleName)), alpha = alpha(for: moduleName)
        return Float(useRslora ? alpha / rank.squareRoot() : alpha / rank)
    }

    /// PEFT's `get_pattern_key`: the first key (in sorted order, the order PEFT's sorted JSON gives) for which
    /// `re.match(rf"(.*\.)?({key})$", name)` succeeds, i.e. the key, read as a regular expression, matches a whole
    /// dot-separated suffix of the name.
    public static func patternKey<Keys: Sequence>(_ keys: Keys, matching name: String) -> String? where Keys.Element == String {
        let range = NSRange(name.startIndex..., in: name)
        for key in keys.sorted() {
            guard let regex = patternRegex(key) else { continue }
            if regex.firstMatch(in: name, options: [.anchored], range: range) != nil { return key }
        }
        return nil
    }

    /// `(.*\.)?(key)$` anchored at both ends (Python's `$` also allows one trailing newline; module names have none).
    static func patternRegex(_ key: String) -> NSRegularExpression? {
        try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$")
    }

    // MARK: files

    /// Reads and validates `directory/adapter_config.json`.
    public static func load(directory: String) throws -> LoRAConfig {
        try load(path: joinPath(directory, fileName))
    }

    /// Reads and validates a PEFT adapter config file; every error names the file.
    public static func load(path: String) throws -> LoRAConfig {
        guard FileManager.default.fileExists(atPath: path) else {
            throw LoRAKitError.file(path, "does not exist (a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors)")
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw LoRAKitError.file(path, "cannot read: \(error.localizedDescription)")
        }
        let config: LoRAConfig
        do { config = try JSONDecoder().decode(LoRAConfig.self, from: data) } catch let error as LoRAKitError {
            throw LoRAKitError.file(path, error.message)
        } catch let error as DecodingError {
            throw LoRAKitError.file(path, describe(error))
        } catch {
            throw LoRAKitError.file(path, "is not valid JSON: \(error.localizedDescription)")
        }
        do { try config.validate() } catch let error as LoRAKitError { throw LoRAKitError.file(path, error.message) }
        if case .method(let name) = config.initLoraWeights, name.lowercased().hasPrefix("pissa") {
            // PEFT rebuilds the residual base at load by an SVD; LoRAKit only reads the converted form.
            throw LoRAKitError.file(path, "init_lora_weights is \"\(name)\": this adapter applies to PiSSA's residual base, not to the model; save it from PEFT with save_pretrained(path_initial_model_for_weight_conversion=...) (a plain LoRA adapter for the original base), as lora finetune --init pissa does")
        }
        return config
    }

    /// The JSON text PEFT writes: sorted keys, indented.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(UInt8(ascii: "\n"))
        return data
    }

    /// Writes `directory/adapter_config.json` atomically (the directory must exist).
    public func write(to directory: String) throws {
        try validate()
        try AtomicFile.write(try jsonData(), to: Self.joinPath(directory, Self.fileName))
    }

    static func joinPath(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    /// One line for a decoding error: which key, what was wrong.
    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }
            return keys.isEmpty ? "the top level" : keys.joined(separator: ".")
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "\(path(context)) has the wrong type (expected \(type)): \(context.debugDescription)"
        case .valueNotFound(let type, let context):
            return "\(path(context)) is null, expected \(type)"
        case .keyNotFound(let key, _):
            return "has no \(key.stringValue)"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "is not valid JSON" : "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "cannot be decoded: \(error)"
        }
    }
}

/// How new adapter weights start.
public enum AdapterInitialization: Equatable, Sendable {
    /// PEFT's default (`init_lora_weights: true`): A ~ U(−1/√in, 1/√in) (kaiming_uniform with a = √5), B = 0.
    case kaiming
    /// `init_lora_weights: "gaussian"`: A ~ N(0, (1/r)²) (PEFT's `std = 1 / r`), B = 0.
    case gaussian
    /// `init_lora_weights: false`: A and B both as a fresh `nn.Linear` (U(−1/√fan_in, 1/√fan_in)), so the
    /// adapter changes the model from the start (PEFT uses this for tests).
    case random
    /// `init_lora_weights: "pissa"`: A and B from the top-r singular triplets of the base weight, which is replaced
    /// by its residual during training (see PiSSA.swift); needs the base weights.
    case pissa
    /// `init_lora_weights: "pissa_niter_K"`: PiSSA from a randomized SVD with K power iterations (`SVD.randomized`),
    /// for weights too large to factor exactly in reasonable time.
    case pissaFast(powerIterations: Int)

    /// PiSSA, exact or fast.
    public var isPiSSA: Bool {
        switch self {
        case .pissa, .pissaFast: return true
        default: return false
        }
    }

    /// The PiSSA initialisation a method name of `init_lora_weights` or `--init` asks for: "pissa", or
    /// "pissa_niter_K" with K ≥ 0 power iterations (PEFT's spelling); nil for any other name.
    public static func pissa(method name: String) -> AdapterInitialization? {
        let lower = name.lowercased()
        if lower == "pissa" { return .pissa }
        let prefix = "pissa_niter_"
        guard lower.hasPrefix(prefix), let iterations = Int(lower.dropFirst(prefix.count)), iterations >= 0 else {
            return nil
        }
        return .pissaFast(powerIterations: iterations)
    }

    /// The config value PEFT writes for this initialisation.
    public var configValue: LoRAConfig.InitLoRAWeights {
        switch self {
        case .kaiming: return .flag(true)
        case .gaussian: return .method("gaussian")
        case .random: return .flag(false)
        case .pissa: return .method("pissa")
        case .pissaFast(let iterations): return .method("pissa_niter_\(iterations)")
        }
    }
}

/// A coding key for any string, to look at keys outside `CodingKeys`.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Any JSON value, for keys whose type varies (and to write integral numbers without a fraction, as PEFT does).
enum JSONValue: Codable, Equatable, CustomStringConvertible {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n):
            if n == n.rounded(), abs(n) < 1e15 { try c.encode(Int(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// False for the values PEFT writes when a feature is off: null, false, "", [] and {}.
    var isSet: Bool {
        switch self {
        case .null: return false
        case .bool(let b): return b
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        case .number: return true
        }
    }

    var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .number(let n): return n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n)
        case .string(let s): return "\"\(s)\""
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o):
            return "{" + o.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
        }
    }
}
