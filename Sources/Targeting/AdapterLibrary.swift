import MiniGPT
import Tensors

/// Adapters loaded once and switched per request on one base model (`lora generate --prompts`): the base's
/// weights stay where they are, only the low-rank deltas attached to its projections change.
public final class AdapterLibrary {
    public let model: LlamaModel
    private var loaded: [String: AdapterSet] = [:]

    public init(model: LlamaModel) { self.model = model }

    /// How many distinct adapter directories have been loaded so far.
    public var count: Int { loaded.count }

    /// Detaches whatever is attached and attaches `arguments` (`DIR` or `DIR:WEIGHT`, outputs adding up);
    /// an empty list leaves the base alone. Each directory is read from disk the first time it is named.
    public func activate(_ arguments: [String]) throws {
        var chosen: [(AdapterSet, Float)] = []
        var seen: Set<String> = []
        for argument in arguments {
            let (directory, weight) = try AdapterSet.parseAdapterArgument(argument)
            guard seen.insert(directory).inserted else {
                throw LoRAKitError("adapter \(directory) is named twice for one prompt; give it once with the weight you want")
            }
            chosen.append((try set(directory), weight))
        }
        model.detachAll()
        for (set, weight) in chosen {
            set.multiplier = weight
            try set.attach(to: model)
        }
    }

    private func set(_ directory: String) throws -> AdapterSet {
        if let set = loaded[directory] { return set }
        let set = try AdapterSet.load(directory: directory, dims: model.dims)
        set.trainable = false
        loaded[directory] = set
        return set
    }
}
