import MiniGPT
import Tensors

/// One LoRA adapter on one projection: `out += s · B (A (dropout(x)))`, PEFT's `lora_A` / `lora_B`.
///
/// With a `magnitude` it is a DoRA adapter (PEFT's `use_dora`, see DoRA.swift): the projection becomes
/// `m ⊙ (W + s·B·A) x / ‖W + s·B·A‖` row by row, which needs the frozen base weight W (`bindBase`).
///
/// A is `[r, in]` and B is `[out, r]`, views into the flat parameter buffer of the `AdapterSet` that owns
/// them; their gradients are views into its flat gradient buffer. For N rows: x is (N, in), h = dropout(x) Aᵀ
/// is (N, r), out is (N, out). Every product is one GEMM over the whole panel of rows.
///
/// The forward keeps h (and, with dropout, the keep mask, one byte per input value) for the backward; the
/// dropped-out input itself is rebuilt from the mask in a scratch panel shared by the set. Buffers grow when a
/// call brings more rows than ever before and are reused otherwise.
public final class LoRALinear: ProjectionDelta {
    public let site: AdapterSite
    public let inFeatures: Int
    public let outFeatures: Int
    public let rank: Int
    /// PEFT's scaling: alpha / r, or alpha / √r with rsLoRA.
    public let scale: Float
    /// Multiplies the adapter's output on top of `scale` (`--adapter DIR:0.5`); 1 by default.
    public var multiplier: Float = 1
    /// When false the backward only passes the input gradient through (the adapter is frozen).
    public var trainable = true
    /// Dropout probability on the adapter's input during training.
    public var dropout: Float
    /// The generator of the dropout masks; save and restore it to resume a run bit for bit.
    public var dropoutRNG: RandomGenerator
    /// `dropoutRNG` before the last forward drew its mask, for `replayLastDropout`.
    private var dropoutRNGBeforeLastMask: RandomGenerator

    public let a: Tensor            // (r, in)
    public let b: Tensor            // (out, r)
    public let aGradient: Tensor    // (r, in)
    public let bGradient: Tensor    // (out, r)
    /// DoRA's magnitude m (PEFT's `lora_magnitude_vector`), (out); nil for a plain LoRA adapter.
    public let magnitude: Tensor?
    /// The gradient of `magnitude`, (out).
    public let magnitudeGradient: Tensor?
    /// The frozen base weight W, (out, in), that DoRA normalises, as the model stores it (F32 or NF4: a quantized
    /// base is read a block of rows at a time, never copied whole); set when the adapter is attached to a model.
    public internal(set) var baseWeight: FrozenWeight?
    /// DoRA's per-forward buffers; nil for plain LoRA.
    let dora: DoRABuffers?

    /// Scratch for (N, in) panels, shared by the adapters of one set (they run one after another).
    let scratch: LoRAScratch
    private var capacity = 0
    // Internal rather than private: DoRA.swift's forward and backward share them.
    var h = Tensor(shape: [0])          // (N, r) dropout(x) Aᵀ, kept for the backward
    var dH = Tensor(shape: [0])         // (N, r)
    var keepMask: [UInt8] = []          // (N, in) 1 where dropout kept the input, kept for the backward
    var lastRows = 0
    var lastUsedDropout = false

    /// The output scale actually applied: `scale · multiplier`.
    public var effectiveScale: Float { scale * multiplier }

    /// True for a DoRA adapter (it has a magnitude vector).
    public var isDoRA: Bool { magnitude != nil }

    /// An adapter over views `a`, `b` and their gradients, which must have shapes [r, in], [out, r]; with
    /// `magnitude` and `magnitudeGradient` (both [out]) a DoRA adapter.
    /// `scratch` may be shared with other adapters that never run at the same time.
    public init(site: AdapterSite, a: Tensor, b: Tensor, aGradient: Tensor, bGradient: Tensor, scale: Float,
                dropout: Float, dropoutSeed: UInt64, scratch: LoRAScratch = LoRAScratch(),
                magnitude: Tensor? = nil, magnitudeGradient: Tensor? = nil) {
        precondition(a.shape.count == 2 && b.shape.count == 2 && a.shape[0] == b.shape[1],
                     "LoRALinear: A \(a.shape) and B \(b.shape) do not chain")
        precondition(aGradient.shape == a.shape && bGradient.shape == b.shape, "LoRALinear: gradient shapes")
        precondition(dropout >= 0 && dropout < 1, "LoRALinear: dropout \(dropout) outside [0, 1)")
        precondition((magnitude == nil) == (magnitudeGradient == nil), "LoRALinear: magnitude without its gradient")
        precondition(magnitude.map { $0.shape == [b.shape[0]] } ?? true, "LoRALinear: magnitude shape")
        precondition(magnitudeGradient.map { $0.shape == [b.shape[0]] } ?? true, "LoRALinear: magnitude gradient shape")
        self.magnitude = magnitude
        self.magnitudeGradient = magnitudeGradient
        self.dora = magnitude == nil ? nil : DoRABuffers(outFeatures: b.shape[0])
        self.site = site
        self.rank = a.shape[0]
        self.inFeatures = a.shape[1]
        self.outFeatures = b.shape[0]
        self.a = a; self.b = b
        self.aGradient = aGradient; self.bGradient = bGradient
        self.scale = scale
        self.dropout = dropout
        self.dropoutRNG = RandomGenerator(seed: dropoutSeed)
        dropoutRNGBeforeLastMask = dropoutRNG
        self.scratch = scratch
    }

    func reserve(rows: Int) {
        if rows > capacity {
            capacity = rows
            h = Tensor(shape: [rows, rank])
            dH = Tensor(shape: [rows, rank])
        }
        // Checked apart from the capacity: `dropout` may be raised after a forward without it (a loaded adapter
        // set to the run's dropout).
        if dropout > 0 && keepMask.count < capacity * inFeatures {
            keepMask = [UInt8](repeating: 0, count: capacity * inFeatures)
        }
    }

    /// xd[N, in] = x ⊙ mask / (1−p): the dropped-out input, rebuilt from the kept mask.
    func applyMask(out xd: UnsafeMutablePointer<Float>, input x: UnsafePointer<Float>, rows: Int) {
        let kept = 1 / (1 - dropout), inF = inFeatures
        keepMask.withUnsafeBufferPointer { m in
            parallelFor(rows, minChunk: 64) { range in
                for i in range.lowerBound * inF..<range.upperBound * inF { xd[i] = m[i] != 0 ? x[i] * kept : 0 }
            }
        }
    }

    /// The next forward draws the last forward's dropout mask again (gradient checkpointing's second forward).
    public func replayLastDropout() { dropoutRNG = dropoutRNGBeforeLastMask }

    /// out[N, out] += s · (dropout(x) Aᵀ) Bᵀ; dropout only when `training`.
    public func forward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int, training: Bool) {
        forward(out: out, input: input, rows: rows, training: training, base: nil)
    }

    /// `forward`; DoRA reads W x from `base` when the caller has it and no dropout changes the input.
    public func forward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int, training: Bool,
                        base: UnsafePointer<Float>?) {
        let x = prepareInput(input, rows: rows, training: training)
        if let dora {
            // with dropout W·dropout(x) is not W x: only then is the product done again
            doraForward(dora, out: out, input: x, rows: rows, base: lastUsedDropout ? nil : base)
            return
        }
        // h = x Aᵀ: (N, in)·(in, r) -> (N, r)
        GEMM.linear(out: h.data, input: x, weight: a.data, rows: rows, inFeatures: inFeatures, outFeatures: rank)
        // out += s · h Bᵀ: (N, r)·(r, out) -> (N, out)
        GEMM.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: rank, alpha: effectiveScale,
                   a: h.data, lda: rank, b: b.data, ldb: rank, beta: 1, c: out, ldc: outFeatures)
    }

    /// Draws the dropout mask (when `training` and dropout > 0) and returns the input the adapter sees: `input`
    /// itself, or the dropped-out input in the scratch panel.
    func prepareInput(_ input: UnsafePointer<Float>, rows: Int, training: Bool) -> UnsafePointer<Float> {
        reserve(rows: rows)
        lastRows = rows
        lastUsedDropout = training && dropout > 0
        dropoutRNGBeforeLastMask = dropoutRNG
        guard lastUsedDropout else { return input }
        // Inverted dropout as PyTorch: keep with probability 1−p, scale kept values by 1/(1−p).
        let count = rows * inFeatures, keep = 1 - dropout
        var rng = dropoutRNG
        keepMask.withUnsafeMutableBufferPointer { m in
            for i in 0..<count { m[i] = rng.nextUniform() < keep ? 1 : 0 }
        }
        dropoutRNG = rng
        let xd = scratch.reserve(count)
        applyMask(out: xd, input: input, rows: rows)
        return UnsafePointer(xd)
    }

    /// Backward of the last `forward` (same `input`): dB += s·dOutᵀ h, dh = s·dOut B, dA += dhᵀ dropout(x),
    /// dInput += mask ⊙ (dh A) / (1−p). Accumulates into the gradients and `dInput`.
    public func backward(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                         rows: Int) {
        backward(dInput: dInput, dOut: dOut, input: input, rows: rows, frozenTermFolded: false)
    }

    /// DoRA's c = m / ‖W + s·B·A‖ of the last forward when it ran without dropout: its term through W,
    /// (dOut ⊙ (c − 1))·W, then joins the frozen product as (dOut ⊙ c)·W. nil for plain LoRA and with dropout (the
    /// term goes through the dropout mask there).
    public var frozenGradientFactor: UnsafePointer<Float>? {
        guard let dora, !lastUsedDropout else { return nil }
        return UnsafePointer(dora.factor.data)
    }

    /// `backward`; with `frozenTermFolded` DoRA leaves its term through W to the caller's frozen product.
    public func backward(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                         rows: Int, frozenTermFolded: Bool) {
        precondition(rows == lastRows, "LoRALinear.backward over \(rows) rows after a forward over \(lastRows)")
        precondition(!frozenTermFolded || frozenGradientFactor != nil, "\(site.moduleName): nothing to fold")
        if let dora {
            doraBackward(dora, dInput: dInput, dOut: dOut, input: input, rows: rows, frozenTermFolded: frozenTermFolded)
            return
        }
        let s = effectiveScale
        if trainable {
            // out += s · h Bᵀ  =>  dB (out, r) += s · dOutᵀ (out, N) · h (N, r)
            GEMM.sgemm(transA: true, transB: false, m: outFeatures, n: rank, k: rows, alpha: s,
                       a: dOut, lda: outFeatures, b: h.data, ldb: rank, beta: 1, c: bGradient.data, ldc: rank)
        }
        // dh (N, r) = s · dOut (N, out) · B (out, r)
        GEMM.sgemm(transA: false, transB: false, m: rows, n: rank, k: outFeatures, alpha: s,
                   a: dOut, lda: outFeatures, b: b.data, ldb: rank, beta: 0, c: dH.data, ldc: rank)
        guard lastUsedDropout else {
            if trainable {
                // h = x Aᵀ  =>  dA (r, in) += dhᵀ (r, N) · x (N, in)
                GEMM.linearBackwardWeight(dWeight: aGradient.data, dOut: dH.data, input: input, rows: rows,
                                          inFeatures: inFeatures, outFeatures: rank)
            }
            // dx (N, in) += dh A
            GEMM.linearBackwardInput(dInput: dInput, dOut: dH.data, weight: a.data, rows: rows,
                                     inFeatures: inFeatures, outFeatures: rank, accumulate: true)
            return
        }
        let panel = scratch.reserve(rows * inFeatures)
        if trainable {
            // h = dropout(x) Aᵀ  =>  dA += dhᵀ · dropout(x), the dropped-out input rebuilt from the mask
            applyMask(out: panel, input: input, rows: rows)
            GEMM.linearBackwardWeight(dWeight: aGradient.data, dOut: dH.data, input: panel, rows: rows,
                                      inFeatures: inFeatures, outFeatures: rank)
        }
        // dx (N, in) += mask ⊙ (dh A) / (1−p)
        GEMM.linearBackwardInput(dInput: panel, dOut: dH.data, weight: a.data, rows: rows,
                                 inFeatures: inFeatures, outFeatures: rank, accumulate: false)
        let kept = 1 / (1 - dropout), inF = inFeatures
        keepMask.withUnsafeBufferPointer { m in
            parallelFor(rows, minChunk: 64) { range in
                for i in range.lowerBound * inF..<range.upperBound * inF where m[i] != 0 { dInput[i] += panel[i] * kept }
            }
        }
    }

    /// The merged weight update, [out, in] (what merging adds to the base projection): s·B·A, or for DoRA
    /// c ⊙ (W + s·B·A) − W with c = m / ‖W + s·B·A‖ per row (the base must be bound).
    public func deltaWeight() -> Tensor {
        if isDoRA { return doraDeltaWeight() }
        let delta = Tensor(shape: [outFeatures, inFeatures])
        // (out, r)·(r, in) -> (out, in)
        GEMM.sgemm(transA: false, transB: false, m: outFeatures, n: inFeatures, k: rank, alpha: effectiveScale,
                   a: b.data, lda: rank, b: a.data, ldb: inFeatures, beta: 0, c: delta.data, ldc: inFeatures)
        return delta
    }
}

/// A growable (N, in) float panel for the dropout path, shared by the adapters of one set.
///
/// Adapters run one at a time (the model's forward and backward are sequential), so one buffer sized for the
/// widest adapter serves them all; it grows only when a call needs more than ever before.
public final class LoRAScratch {
    /// Slot 0: the (N, in) dropout panel; DoRA also uses slot 1, (N, out).
    private var buffers = [Tensor(shape: [0]), Tensor(shape: [0])]

    public init() {}

    /// A pointer to at least `count` floats of slot `slot`, valid until the next `reserve` that grows that slot.
    func reserve(_ count: Int, slot: Int = 0) -> UnsafeMutablePointer<Float> {
        if buffers[slot].count < count { buffers[slot] = Tensor(shape: [count]) }
        return buffers[slot].data
    }
}
