import Foundation
import MiniGPT
import Tensors

/// Adapters that can be attached to a model, scaled and frozen: a LoRA `AdapterSet` or an `AdaLoRASet`.
public protocol AttachableAdapters: AnyObject {
    /// Scales the adapters' output (`--adapter DIR:0.5`).
    var multiplier: Float { get set }
    /// False freezes the adapters (their backward only passes gradients through).
    var trainable: Bool { get set }
    /// Adds the adapters to `model`'s projections (after any already there).
    func attach(to model: LlamaModel) throws
    /// The model dimensions the adapters were built for.
    var dims: ModelDimensions { get }
    /// Why merging these adapters would be pointless (they adapt nothing, or every update is zero), nil otherwise.
    var mergeProblem: String? { get }
    /// True when the set has an adapter on `projection` of block `layer`.
    func adapts(layer: Int, projection: Projection) -> Bool
    /// Adds the update of the adapter on `projection` of block `layer`, multiplier included, to `weight` (an
    /// [out, in] copy of `base`, the unmerged projection); nothing when the set does not adapt it.
    func addMergedUpdate(layer: Int, projection: Projection, to weight: Tensor, base: Tensor)
}

/// Adapters the fine-tuner trains: every parameter in one flat buffer with a gradient buffer of the same layout
/// (what AdamW, clipping and checkpoints see), plus the hooks a variant needs around the optimizer step.
public protocol TrainableAdapters: AttachableAdapters {
    var parameters: Tensor { get }
    var gradients: Tensor { get }
    /// Sets every gradient to zero (once per optimizer step; the backward accumulates).
    func zeroGradients()
    /// Writes the PEFT adapter files into `directory`.
    func save(to directory: String, baseModelPath: String?) throws
    /// The dropout generators, in adapter order (for a checkpoint), and their restoration.
    var dropoutStates: [RandomGenerator] { get }
    func restoreDropoutStates(_ states: [RandomGenerator]) throws
    /// Sets the dropout probability of every adapter (a loaded adapter trains with the run's dropout).
    func setDropout(_ probability: Float)
    /// A warning when the trained adapters still do not change the model, nil otherwise.
    var inertWarning: String? { get }
    /// Adds a regulariser's gradient to `gradients` and returns its value, added to the step's loss (after the
    /// backward of the step's micro-batches, before clipping). 0 for plain LoRA.
    func addRegularization() -> Double
    /// Runs after the optimizer's update of step `stepIndex` (0-based), before the gradients are zeroed.
    func afterOptimizerStep(_ stepIndex: Int)
    /// Writes what exact resumption needs beyond `save` and the optimizer moments into a checkpoint directory.
    func saveTrainingState(to directory: String) throws
}

extension TrainableAdapters {
    public func addRegularization() -> Double { 0 }
    public func afterOptimizerStep(_ stepIndex: Int) {}
    public func saveTrainingState(to directory: String) throws {}
}

extension AdapterSet: TrainableAdapters {
    public func setDropout(_ probability: Float) {
        for adapter in adapters { adapter.dropout = probability }
    }

    public var inertWarning: String? {
        allBZero ? "every lora_B is still zero: the adapter does not change the model (too few steps or too low --lr?)" : nil
    }
}

/// Reading adapter directories of any PEFT type LoRAKit knows.
public enum AdapterDirectory {
    /// The `peft_type` of `directory/adapter_config.json` (nil when the file has none or cannot be read: the
    /// type's own loader then reports the problem).
    public static func peftType(_ directory: String) -> String? {
        guard let data = FileManager.default.contents(atPath: LoRAConfig.joinPath(directory, LoRAConfig.fileName)),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object["peft_type"] as? String
    }

    /// Creates `directory` (and its parents) for an adapter's files, or says why it cannot.
    static func create(_ directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw LoRAKitError.file(directory, "cannot create the adapter directory: \(error.localizedDescription)")
        }
    }

    /// Loads a LoRA or AdaLoRA adapter for a base of `dims`, frozen.
    public static func load(_ directory: String, dims: ModelDimensions) throws -> any AttachableAdapters {
        let set: any AttachableAdapters
        if peftType(directory) == AdaLoRAConfig.peftTypeName {
            set = try AdaLoRASet.load(directory: directory, dims: dims)
        } else {
            set = try AdapterSet.load(directory: directory, dims: dims)
        }
        set.trainable = false
        return set
    }

    /// Loads each `--adapter DIR[:WEIGHT]` (LoRA or AdaLoRA) for `model` and attaches it; outputs add up.
    @discardableResult
    public static func attachAll(_ arguments: [String], to model: LlamaModel) throws -> [any AttachableAdapters] {
        try arguments.map { argument in
            let (directory, weight) = try AdapterSet.parseAdapterArgument(argument)
            let set = try load(directory, dims: model.dims)
            set.multiplier = weight
            try set.attach(to: model)
            return set
        }
    }
}
