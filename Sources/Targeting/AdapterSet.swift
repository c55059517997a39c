import Checkpoints
import Foundation
import MiniGPT
import Tensors

/// The LoRA adapters of one PEFT adapter over a model: one `LoRALinear` per targeted (layer, projection).
///
/// All A and B matrices live in ONE flat parameter buffer and their gradients in ONE flat gradient buffer of the
/// same layout, in a fixed order — sites sorted by (layer, projection q…down), A before B (then DoRA's magnitude
/// m when the config has `use_dora`) — so an optimizer,
/// gradient clipping and checkpoints treat the whole set as one array. Several sets can be attached to one
/// model; their outputs add up.
public final class AdapterSet {
    /// The PEFT configuration this set was built from (written back by `save`).
    public let config: LoRAConfig
    /// The base model's sizes the adapters fit.
    public let dims: ModelDimensions
    /// The adapters, in the order of the flat buffers.
    public let adapters: [LoRALinear]
    /// Every A and B (and DoRA magnitude), back to back (`trainableCount` floats).
    public let parameters: Tensor
    /// The gradients of `parameters`, same layout.
    public let gradients: Tensor

    /// PiSSA's initial A₀ and B₀ (layout of `parameters`); nil unless the set was initialised with `.pissa`. Such a
    /// set trains on `trainingBase(_:)` and is saved converted for the original base (PiSSA.swift).
    public internal(set) var pissaInitial: Tensor?

    /// Scales the set's output (`lora forward --adapter DIR:0.5`); 1 by default.
    public var multiplier: Float = 1 {
        didSet { for adapter in adapters { adapter.multiplier = multiplier } }
    }
    /// False freezes the set: its backward still passes gradients to the layers below, but leaves `gradients` alone.
    public var trainable = true {
        didSet { for adapter in adapters { adapter.trainable = trainable } }
    }

    public static let weightsFileName = "adapter_model.safetensors"

    private let bySite: [AdapterSite: LoRALinear]

    // MARK: building

    /// New adapters on the modules `config` targets, initialised as `initialization` (nil: as the config's
    /// `init_lora_weights` says) from `seed`.
    ///
    /// A DoRA config (`use_dora`) needs `base`: each magnitude starts as ‖W + s·B·A‖, the row norms of its base
    /// projection, as PEFT initialises it.
    public convenience init(config: LoRAConfig, dims: ModelDimensions, initialization: AdapterInitialization? = nil,
                            seed: UInt64 = 0, base: LlamaWeights? = nil) throws {
        try config.validate()
        let sites = try config.sites(layerCount: dims.layers)
        try self.init(config: config, sites: sites, dims: dims, seed: seed)
        let initialization = try initialization ?? config.initialization()
        if initialization.isPiSSA {
            guard let base else {
                throw LoRAKitError("PiSSA initialisation needs the base model's weights (it factors them)")
            }
            guard !config.useDora else { throw LoRAKitError("DoRA with PiSSA initialisation is not supported") }
            guard base.dims == dims else { throw LoRAKitError("the base model does not have the adapter's dimensions") }
            // the sketches of a fast SVD come from the set's seed, adapter after adapter
            var rng = RandomGenerator(seed: seed)
            for adapter in adapters {
                try PiSSA.initialize(adapter, weight: base.layers[adapter.site.layer].projection(adapter.site.projection),
                                     initialization: initialization, rng: &rng)
            }
            pissaInitial = parameters.clone()
        } else {
            initialize(initialization, seed: seed)
        }
        if config.useDora {
            guard let base else {
                throw LoRAKitError("a DoRA adapter (use_dora) needs the base model's weights to initialise its magnitudes")
            }
            try bind(base)
            for adapter in adapters { adapter.initializeMagnitude() }
        }
    }

    /// New adapters on `targets` of blocks `layers`, with the rank, alpha, dropout and rsLoRA of `config`
    /// (its `target_modules` and `layers_to_transform` are replaced by these).
    public convenience init(config: LoRAConfig, targets: [Projection], layers: [Int], dims: ModelDimensions,
                            initialization: AdapterInitialization = .kaiming, seed: UInt64 = 0,
                            base: LlamaWeights? = nil) throws {
        guard !targets.isEmpty else { throw LoRAKitError("no target projections given: the adapter would be empty") }
        guard !layers.isEmpty else { throw LoRAKitError("no layers given: the adapter would be empty") }
        if let bad = layers.first(where: { $0 < 0 || $0 >= dims.layers }) {
            throw LoRAKitError("layer \(bad) does not exist: the base model has \(dims.layers) layers (0-\(dims.layers - 1))")
        }
        var config = config
        config.targetModules = .list(Set(targets).sorted().map(\.hfName))
        let distinct = Set(layers).sorted()
        config.layersToTransform = distinct == Array(0..<dims.layers) ? nil : distinct
        config.initLoraWeights = initialization.configValue
        try self.init(config: config, dims: dims, initialization: initialization, seed: seed, base: base)
    }

    /// Zero adapters on `sites`; the dropout generators are seeded from `seed`.
    private init(config: LoRAConfig, sites: [AdapterSite], dims: ModelDimensions, seed: UInt64) throws {
        guard !sites.isEmpty else { throw LoRAKitError("the adapter targets no module: it would be empty") }
        self.config = config
        self.dims = dims
        var shapes: [(a: [Int], b: [Int])] = []
        for site in sites {
            let rank = config.rank(for: site.moduleName)
            let f = site.projection.features(dims)
            shapes.append(([rank, f.inFeatures], [f.outFeatures, rank]))
        }
        let dora = config.useDora
        // DoRA adds one magnitude per output feature (B's rows) after each B.
        var total = 0
        for shape in shapes {
            let perAdapter: Int = shape.a[0] * shape.a[1] + shape.b[0] * shape.b[1]
            total += perAdapter + (dora ? shape.b[0] : 0)
        }
        parameters = Tensor(shape: [total])
        gradients = Tensor(shape: [total])
        // The dropout streams do not depend on the initialisation, so a loaded and a new set with the same seed
        // drop the same inputs.
        var seeds = RandomGenerator(seed: seed ^ 0xD2B7_4407_B1CE_6E93)
        let scratch = LoRAScratch()
        var offset = 0
        var adapters: [LoRALinear] = []
        for (site, shape) in zip(sites, shapes) {
            func view(_ base: Tensor, _ shape: [Int], at offset: Int) -> Tensor {
                Tensor(borrowing: base.data + offset, shape: shape, owner: base)
            }
            let aCount = shape.a.reduce(1, *), bCount = shape.b.reduce(1, *), mCount = dora ? shape.b[0] : 0
            let mOffset = offset + aCount + bCount
            adapters.append(LoRALinear(
                site: site,
                a: view(parameters, shape.a, at: offset), b: view(parameters, shape.b, at: offset + aCount),
                aGradient: view(gradients, shape.a, at: offset), bGradient: view(gradients, shape.b, at: offset + aCount),
                scale: config.scale(for: site.moduleName), dropout: Float(config.loraDropout),
                dropoutSeed: seeds.next(), scratch: scratch,
                magnitude: dora ? view(parameters, [mCount], at: mOffset) : nil,
                magnitudeGradient: dora ? view(gradients, [mCount], at: mOffset) : nil))
            offset += aCount + bCount + mCount
        }
        self.adapters = adapters
        bySite = Dictionary(uniqueKeysWithValues: adapters.map { ($0.site, $0) })
    }

    /// The plain LoRA adapter whose update equals `adaLoRA`'s, module by module: s·B·diag(E)·A is B·A' with
    /// A' = s·diag(E)·A over the kept triplets, so each module keeps its rank and gets lora_alpha = r (scale 1).
    /// Modules that kept no triplet are left out. For the commands that work on B·A factors (combine, analyze).
    public convenience init(equivalentTo adaLoRA: AdaLoRASet) throws {
        let kept = adaLoRA.adapters.filter { $0.rank > 0 }
        guard let largest = kept.map(\.rank).max() else {
            throw LoRAKitError("the AdaLoRA adapter kept no triplet in any module: its update is zero")
        }
        var config = LoRAConfig(targets: Array(Set(kept.map(\.site.projection))), layers: nil, r: largest,
                                loraAlpha: Double(largest))
        config.baseModelNameOrPath = adaLoRA.config.baseModelNameOrPath
        for module in kept {
            config.rankPattern[module.site.moduleName] = module.rank
            config.alphaPattern[module.site.moduleName] = Double(module.rank)
        }
        try self.init(config: config, sites: kept.map(\.site), dims: adaLoRA.dims, seed: 0)
        for (lora, svd) in zip(adapters, kept) {
            let scaledA = svd.eScaledA()
            for i in 0..<scaledA.count { lora.a.data[i] = svd.effectiveScale * scaledA.data[i] }
            lora.b.copy(from: svd.b)
        }
    }

    /// A LoRA adapter directory as `load` reads it, or an AdaLoRA one as its equivalent LoRA
    /// (`init(equivalentTo:)`).
    public static func loadFactors(directory: String, dims: ModelDimensions) throws -> AdapterSet {
        if AdapterDirectory.peftType(directory) == AdaLoRAConfig.peftTypeName {
            return try AdapterSet(equivalentTo: AdaLoRASet.load(directory: directory, dims: dims))
        }
        return try load(directory: directory, dims: dims)
    }

    /// Fills A and B as `initialization` says, adapter by adapter in buffer order, from one generator.
    private func initialize(_ initialization: AdapterInitialization, seed: UInt64) {
        var rng = RandomGenerator(seed: seed)
        for adapter in adapters {
            let aBound = 1 / Float(adapter.inFeatures).squareRoot()
            switch initialization {
            case .kaiming:
                rng.fillUniform(adapter.a.data, count: adapter.a.count, low: -aBound, high: aBound)
                adapter.b.zero()
            case .gaussian:
                rng.fillNormal(adapter.a.data, count: adapter.a.count, std: 1 / Float(adapter.rank))
                adapter.b.zero()
            case .pissa, .pissaFast:
                preconditionFailure("PiSSA is initialised from the base weights, not from a generator")
            case .random:
                let bBound = 1 / Float(adapter.rank).squareRoot()
                rng.fillUniform(adapter.a.data, count: adapter.a.count, low: -aBound, high: aBound)
                rng.fillUniform(adapter.b.data, count: adapter.b.count, low: -bBound, high: bBound)
            }
        }
    }

    // MARK: use

    /// Adds every adapter to `model`'s projections (after any adapters already there); DoRA adapters are bound to
    /// the model's frozen weights, which they normalise.
    public func attach(to model: LlamaModel) throws {
        try bind(model.weights)
        for adapter in adapters { model.attach(adapter, layer: adapter.site.layer, projection: adapter.site.projection) }
    }

    /// True when the set is DoRA (`use_dora`): every adapter has a magnitude.
    public var isDoRA: Bool { config.useDora }

    /// Binds DoRA adapters to their base projections in `weights` (plain LoRA needs no base).
    public func bind(_ weights: LlamaWeights) throws {
        guard weights.dims == dims else {
            throw LoRAKitError("adapter does not fit the model: it was built for \(Self.describe(dims)), the model is \(Self.describe(weights.dims))")
        }
        for adapter in adapters where adapter.isDoRA {
            adapter.bindBase(weights.layers[adapter.site.layer].frozen(adapter.site.projection))
        }
    }

    /// The adapter on `projection` of block `layer`, if the set has one.
    public func adapter(layer: Int, projection: Projection) -> LoRALinear? {
        bySite[AdapterSite(layer: layer, projection: projection)]
    }

    /// Sets every gradient to zero (once per optimizer step; the backward accumulates).
    public func zeroGradients() { gradients.zero() }

    /// Where the B matrices and DoRA magnitudes lie in `parameters`: what LoRA+ trains at a higher rate (PEFT's
    /// `create_loraplus_optimizer` puts every `lora_B` and every 1-D parameter in that group).
    public var outputSideRanges: [Range<Int>] {
        adapters.flatMap { adapter -> [Range<Int>] in
            let b = parameters.data.distance(to: adapter.b.data)
            let end = b + adapter.b.count + (adapter.magnitude?.count ?? 0)
            return [b..<end]
        }
    }

    /// Number of trainable values (all A and B, and DoRA magnitudes).
    public var trainableCount: Int { parameters.count }

    /// True when every B is zero, i.e. the set does not change the model (worth a warning after training).
    public var allBZero: Bool {
        adapters.allSatisfy { adapter in (0..<adapter.b.count).allSatisfy { adapter.b[$0] == 0 } }
    }

    /// The merged update s·B·A ([out, in], multiplier included) of `projection` in block `layer`, or nil when the
    /// set has no adapter there. For DoRA it is c ⊙ (W + s·B·A) − W and needs the set bound to its base (`bind`,
    /// `attach`); for a PiSSA set it is the update of the residual base (`trainingBase`).
    public func deltaWeight(layer: Int, projection: Projection) -> Tensor? {
        adapter(layer: layer, projection: projection)?.deltaWeight()
    }

    /// The dropout generators, in adapter order (for a checkpoint).
    public var dropoutStates: [RandomGenerator] { adapters.map(\.dropoutRNG) }

    /// Restores generators saved by `dropoutStates`.
    public func restoreDropoutStates(_ states: [RandomGenerator]) throws {
        guard states.count == adapters.count else {
            throw LoRAKitError("checkpoint holds \(states.count) dropout generator states, the adapter has \(adapters.count) modules")
        }
        for (adapter, state) in zip(adapters, states) { adapter.dropoutRNG = state }
    }

    // MARK: files

    /// Writes PEFT's `adapter_config.json` and `adapter_model.safetensors` into `directory` (created if missing;
    /// existing files are replaced, each atomically — whether to overwrite a previous run is the caller's call).
    public func save(to directory: String, baseModelPath: String? = nil) throws {
        try checkShapes()
        try AdapterDirectory.create(directory)
        var tensors: [(name: String, tensor: Tensor)] = []
        for adapter in adapters {
            if let initial = pissaInitial {
                // PiSSA: [A; A₀] and [B, −B₀], a rank-2r LoRA for the original base (PiSSA.swift).
                let (a0, b0) = initialTensors(of: adapter, in: initial)
                let (a, b) = PiSSA.convertedTensors(adapter, a0: a0, b0: b0)
                tensors.append((adapter.site.tensorNameA, a))
                tensors.append((adapter.site.tensorNameB, b))
                continue
            }
            tensors.append((adapter.site.tensorNameA, adapter.a))
            tensors.append((adapter.site.tensorNameB, adapter.b))
            if let magnitude = adapter.magnitude { tensors.append((adapter.site.tensorNameMagnitude, magnitude)) }
        }
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"],
                                    to: LoRAConfig.joinPath(directory, Self.weightsFileName))
        var written = pissaInitial == nil ? config : PiSSA.convertedConfig(config)
        written.inferenceMode = true   // as PEFT's save_pretrained
        if let baseModelPath { written.baseModelNameOrPath = baseModelPath }
        try written.write(to: directory)
    }

    /// Refuses a set that cannot be a valid adapter of its base (empty, or a shape the base does not have).
    private func checkShapes() throws {
        guard !adapters.isEmpty else { throw LoRAKitError("refusing to save an empty adapter") }
        for adapter in adapters {
            let site = adapter.site
            guard site.layer >= 0, site.layer < dims.layers else {
                throw LoRAKitError("adapter on \(site.moduleName): the base model has \(dims.layers) layers")
            }
            let f = site.projection.features(dims), rank = config.rank(for: site.moduleName)
            guard adapter.a.shape == [rank, f.inFeatures], adapter.b.shape == [f.outFeatures, rank] else {
                throw LoRAKitError("adapter on \(site.moduleName) has A \(adapter.a.shape) and B \(adapter.b.shape), the base needs \([rank, f.inFeatures]) and \([f.outFeatures, rank])")
            }
        }
    }

    /// Reads a PEFT adapter directory for a base model of `dims`.
    ///
    /// Every tensor is checked against the base before use; the adapter is refused when its config targets a
    /// module the base does not have, when a tensor is missing, has another shape, disagrees with `r`, or when
    /// the file holds tensors LoRAKit would ignore (embeddings, biases, DoRA magnitudes of a non-DoRA config …).
    /// A DoRA adapter (`use_dora`) also needs `lora_magnitude_vector` [out] for every module; before it computes
    /// anything it must be attached to (or bound to) the base it was trained on.
    public static func load(directory: String, dims: ModelDimensions, seed: UInt64 = 0) throws -> AdapterSet {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw LoRAKitError.file(directory, "adapter directory does not exist")
        }
        guard isDirectory.boolValue else {
            throw LoRAKitError.file(directory, "is a file; an adapter is a directory with \(LoRAConfig.fileName) and \(weightsFileName)")
        }
        let configPath = LoRAConfig.joinPath(directory, LoRAConfig.fileName)
        let config = try LoRAConfig.load(path: configPath)
        let sites: [AdapterSite]
        do { sites = try config.sites(layerCount: dims.layers) } catch let error as LoRAKitError {
            throw LoRAKitError.file(configPath, error.message)
        }
        let weightsPath = LoRAConfig.joinPath(directory, weightsFileName)
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            let bin = LoRAConfig.joinPath(directory, "adapter_model.bin")
            if FileManager.default.fileExists(atPath: bin) {
                throw LoRAKitError.file(bin, "PyTorch pickle adapters are not read; save the adapter with safe_serialization=True (adapter_model.safetensors)")
            }
            throw LoRAKitError.file(weightsPath, "does not exist (the adapter's weights are missing)")
        }
        let file = try SafeTensorsFile(path: weightsPath)
        let set = try AdapterSet(config: config, sites: sites, dims: dims, seed: seed)

        let expected = Set(set.adapters.flatMap {
            [$0.site.tensorNameA, $0.site.tensorNameB] + ($0.isDoRA ? [$0.site.tensorNameMagnitude] : [])
        })
        let unused = file.names.filter { !expected.contains($0) }
        if !unused.isEmpty {
            let shown = unused.prefix(4).joined(separator: ", ") + (unused.count > 4 ? " and \(unused.count - 4) more" : "")
            let hint = unused.contains { $0.hasSuffix(".lora_magnitude_vector") } && !config.useDora
                ? "; DoRA magnitudes belong to an adapter whose adapter_config.json has use_dora: true" : ""
            throw LoRAKitError.file(weightsPath, "holds tensors LoRAKit does not use: \(shown) (only lora_A and lora_B weights, and lora_magnitude_vector with use_dora, of the modules adapter_config.json targets are read)\(hint)")
        }
        for adapter in set.adapters {
            let module = adapter.site.moduleName
            let rank = adapter.rank
            for (name, target) in [(adapter.site.tensorNameA, adapter.a), (adapter.site.tensorNameB, adapter.b)] {
                guard let info = file.info(name) else {
                    throw LoRAKitError.file(weightsPath, "has no tensor \(name), which adapter_config.json's target_modules need for \(module)")
                }
                if info.shape != target.shape {
                    // A = [r, in] and B = [out, r]: a wrong r with the right in/out means the config and tensors disagree.
                    let isA = target === adapter.a
                    let rankOf = info.shape.count == 2 ? (isA ? info.shape[0] : info.shape[1]) : -1
                    let featuresFit = info.shape.count == 2
                        && (isA ? info.shape[1] == target.shape[1] : info.shape[0] == target.shape[0])
                    if featuresFit && rankOf != rank {
                        throw LoRAKitError.file(weightsPath, "tensor \(name) has rank \(rankOf) (shape \(info.shape)), but adapter_config.json gives \(module) r = \(rank)")
                    }
                    throw LoRAKitError.file(weightsPath, "tensor \(name) has shape \(info.shape), the base needs \(target.shape)")
                }
                let values = try file.tensor(name)
                for i in 0..<values.count where !values[i].isFinite {
                    throw LoRAKitError.file(weightsPath, "tensor \(name) holds a non-finite value (\(values[i])) at index \(i)")
                }
                target.copy(from: values)
            }
            if let magnitude = adapter.magnitude {
                let name = adapter.site.tensorNameMagnitude
                guard let info = file.info(name) else {
                    throw LoRAKitError.file(weightsPath, "has no tensor \(name), which use_dora in adapter_config.json needs for \(module)")
                }
                guard info.shape == magnitude.shape else {
                    throw LoRAKitError.file(weightsPath, "tensor \(name) has shape \(info.shape), the base needs \(magnitude.shape)")
                }
                let values = try file.tensor(name)
                for i in 0..<values.count where !values[i].isFinite {
                    throw LoRAKitError.file(weightsPath, "tensor \(name) holds a non-finite value (\(values[i])) at index \(i)")
                }
                magnitude.copy(from: values)
            }
        }
        return set
    }

    /// Parses an `--adapter` argument: `DIR` or `DIR:WEIGHT` (the weight multiplies the set's output).
    public static func parseAdapterArgument(_ text: String) throws -> (directory: String, multiplier: Float) {
        if let colon = text.lastIndex(of: ":") {
            let suffix = String(text[text.index(after: colon)...])
            if let weight = Float(suffix) {
                guard weight.isFinite else { throw LoRAKitError("--adapter \(text): the weight \(suffix) is not a finite number") }
                let directory = String(text[..<colon])
                guard !directory.isEmpty else { throw LoRAKitError("--adapter \(text): no directory before the weight") }
                return (directory, weight)
            }
        }
        guard !text.isEmpty else { throw LoRAKitError("--adapter needs a directory") }
        return (text, 1)
    }

    private static func describe(_ d: ModelDimensions) -> String {
        "\(d.layers) layers, hidden \(d.dim), q \(d.qDim), kv \(d.kvDim), ffn \(d.ffnDim)"
    }
}

extension AdapterSet {
    public var mergeProblem: String? {
        if adapters.isEmpty { return "it adapts no projection" }
        // A DoRA set with zero B still rescales rows by its magnitudes, so it can change the model.
        if allBZero && !isDoRA { return "every lora_B is zero, so it changes nothing (an untrained adapter?)" }
        return nil
    }

    public func adapts(layer: Int, projection: Projection) -> Bool { adapter(layer: layer, projection: projection) != nil }

    public func addMergedUpdate(layer: Int, projection: Projection, to weight: Tensor, base: Tensor) {
        guard let lora = adapter(layer: layer, projection: projection) else { return }
        AdapterMerge.addDelta(of: lora, to: weight, base: base)
    }
}
