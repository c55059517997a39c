/// The seven linear projections of a LLaMA block, the places an adapter can go.
public enum Projection: String, CaseIterable, Codable, Sendable, Comparable {
    case q, k, v, o, gate, up, down

    /// Hugging Face's module name (`q_proj` …), used in adapter configs and tensor names.
    public var hfName: String { "\(rawValue)_proj" }

    /// The module path inside a block: `self_attn.q_proj` or `mlp.gate_proj`.
    public var modulePath: String {
        switch self {
        case .q, .k, .v, .o: return "self_attn.\(hfName)"
        case .gate, .up, .down: return "mlp.\(hfName)"
        }
    }

    /// (in, out) features of this projection in a model of `config`.
    public func features(_ config: ModelDimensions) -> (inFeatures: Int, outFeatures: Int) {
        switch self {
        case .q: return (config.dim, config.qDim)
        case .k, .v: return (config.dim, config.kvDim)
        case .o: return (config.qDim, config.dim)
        case .gate, .up: return (config.dim, config.ffnDim)
        case .down: return (config.ffnDim, config.dim)
        }
    }

    /// Position in `allCases` (q 0 … down 6).
    public var index: Int {
        switch self {
        case .q: return 0
        case .k: return 1
        case .v: return 2
        case .o: return 3
        case .gate: return 4
        case .up: return 5
        case .down: return 6
        }
    }

    public static func < (a: Projection, b: Projection) -> Bool { a.index < b.index }
}

/// Something added to a frozen projection's output: `y = W x + delta(x)`.
///
/// MiniGPT knows nothing of LoRA; the Targeting module implements this protocol. A delta keeps whatever it
/// needs for its backward (for LoRA: `x·Aᵀ` and the dropout mask) in its own buffers, and accumulates its own
/// parameter gradients.
public protocol ProjectionDelta: AnyObject {
    /// out[rows, outF] += delta(input[rows, inF]). `training` turns dropout on.
    func forward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int, training: Bool)

    /// `forward`, told that `base` holds input · Wᵀ of the frozen projection (nil when the caller does not have it:
    /// `out` also holds a residual, or another delta already added to it). A delta whose output depends on W x
    /// (DoRA) reads it there instead of computing the product again; `base` may be `out` itself, so it is read before
    /// `out` is written.
    func forward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int, training: Bool,
                 base: UnsafePointer<Float>?)

    var frozenGradientFactor: UnsafePointer<Float>? { get }

    func backward(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                  rows: Int, frozenTermFolded: Bool)

    /// dInput[rows, inF] += ∂L/∂input through the delta; parameter gradients accumulate inside the delta.
    /// Called after `forward` on the same input, before the next `forward` (or after a replayed one).
    func backward(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                  rows: Int)

    /// Makes the next `forward` draw the dropout mask of the last one again and leave the generator where that one
    /// left it. Gradient checkpointing runs a block's forward a second time before its backward; both runs must
    /// see the same mask for the backward to be the step's.
    func replayLastDropout()
}

extension ProjectionDelta {
    /// A per-output factor c with which the frozen projection's input gradient (dOut ⊙ c)·W stands for dOut·W plus
    /// this delta's own term through W, so that one product does both (DoRA without dropout, as PEFT's autograd sums
    /// them). nil (the default): the delta has no such term. Valid after `forward`, until the next one.
    public var frozenGradientFactor: UnsafePointer<Float>? { nil }

    /// `backward`, told whether the caller's frozen product used `frozenGradientFactor` (the delta then leaves its
    /// own term through W out).
    public func backward(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                         rows: Int, frozenTermFolded: Bool) {
        precondition(!frozenTermFolded, "a delta without a frozen gradient factor cannot have its term folded")
        backward(dInput: dInput, dOut: dOut, input: input, rows: rows)
    }

    /// A delta that does not use W x ignores it.
    public func forward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int, training: Bool,
                        base: UnsafePointer<Float>?) {
        forward(out: out, input: input, rows: rows, training: training)
    }
}
