import MiniGPT
import Tensors

/// One AdaLoRA adapter on one projection: `out += s · ((dropout(x) Aᵀ) ⊙ eᵀ) Bᵀ`, PEFT's `SVDLinear` with
/// `lora_A` (P's rows), `lora_E` (the singular values Λ) and `lora_B` (Q's columns).
///
/// A is `[r, in]`, e is `[r]` (PEFT stores it `[r, 1]`), B is `[out, r]`; views into the flat buffers of the
/// `AdaLoRASet` that owns them. For N rows: x is (N, in), h = dropout(x) Aᵀ is (N, r), g = h ⊙ e is (N, r), out is
/// (N, out). The forward keeps h and g (and the dropout mask) for the backward; buffers grow only when a call
/// brings more rows than ever before.
public final class SVDLinear: ProjectionDelta {
    public let site: AdapterSite
    public let inFeatures: Int
    public let outFeatures: Int
    public let rank: Int
    /// PEFT's `scaling / (ranknum + 1e-5)`.
    public let scale: Float
    /// Multiplies the output on top of `scale` (`--adapter DIR:0.5`).
    public var multiplier: Float = 1
    /// When false the backward only passes the input gradient through.
    public var trainable = true
    public var dropout: Float
    public var dropoutRNG: RandomGenerator
    /// `dropoutRNG` before the last forward drew its mask, for `replayLastDropout`.
    private var dropoutRNGBeforeLastMask: RandomGenerator

    public let a: Tensor            // (r, in)
    public let e: Tensor            // (r)
    public let b: Tensor            // (out, r)
    public let aGradient: Tensor    // (r, in)
    public let eGradient: Tensor    // (r)
    public let bGradient: Tensor    // (out, r)

    let scratch: LoRAScratch
    private var capacity = 0
    private var h = Tensor(shape: [0])          // (N, r) dropout(x) Aᵀ
    private var g = Tensor(shape: [0])          // (N, r) h ⊙ e
    private var dG = Tensor(shape: [0])         // (N, r)
    private var keepMask: [UInt8] = []          // (N, in)
    private var lastRows = 0
    private var lastUsedDropout = false

    public var effectiveScale: Float { scale * multiplier }

    public init(site: AdapterSite, a: Tensor, e: Tensor, b: Tensor, aGradient: Tensor, eGradient: Tensor,
                bGradient: Tensor, scale: Float, dropout: Float, dropoutSeed: UInt64, scratch: LoRAScratch) {
        precondition(a.shape.count == 2 && b.shape.count == 2 && a.shape[0] == b.shape[1] && e.shape == [a.shape[0]],
                     "SVDLinear: A \(a.shape), E \(e.shape) and B \(b.shape) do not chain")
        precondition(aGradient.shape == a.shape && eGradient.shape == e.shape && bGradient.shape == b.shape,
                     "SVDLinear: gradient shapes")
        precondition(dropout >= 0 && dropout < 1, "SVDLinear: dropout \(dropout) outside [0, 1)")
        self.site = site
        rank = a.shape[0]
        inFeatures = a.shape[1]
        outFeatures = b.shape[0]
        self.a = a; self.e = e; self.b = b
        self.aGradient = aGradient; self.eGradient = eGradient; self.bGradient = bGradient
        self.scale = scale
        self.dropout = dropout
        dropoutRNG = RandomGenerator(seed: dropoutSeed)
        dropoutRNGBeforeLastMask = dropoutRNG
        self.scratch = scratch
    }

    private func reserve(rows: Int) {
        if rows > capacity {
            capacity = rows
            h = Tensor(shape: [rows, rank])
            g = Tensor(shape: [rows, rank])
            dG = Tensor(shape: [rows, rank])
        }
        // Checked apart from the capacity: `dropout` may be raised after a forward without it (a loaded adapter
        // set to the run's dropout).
        if dropout > 0 && keepMask.count < capacity * inFeatures {
            keepMask = [UInt8](repeating: 0, count: capacity * inFeatures)
        }
    }

    /// xd[N, in] = x ⊙ mask / (1−p), rebuilt from the kept mask.
    private func applyMask(out xd: UnsafeMutablePointer<Float>, input x: UnsafePointer<Float>, rows: Int) {
        let kept = 1 / (1 - dropout), inF = inFeatures
        keepMask.withUnsafeBufferPointer { m in
            parallelFor(rows, minChunk: 64) { range in
                for i in range.lowerBound * inF..<range.upperBound * inF { xd[i] = m[i] != 0 ? x[i] * kept : 0 }
            }
        }
    }

    /// The next forward draws the last forward's dropout mask again (gradient checkpointing's second forward).
    public func replayLastDropout() { dropoutRNG = dropoutRNGBeforeLastMask }

    /// out[N, out] += s · ((dropout(x) Aᵀ) ⊙ eᵀ) Bᵀ; dropout only when `training`.
    public func forward(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int, training: Bool) {
        reserve(rows: rows)
        lastRows = rows
        lastUsedDropout = training && dropout > 0
        dropoutRNGBeforeLastMask = dropoutRNG
        if rank == 0 { return }
        var x = input
        if lastUsedDropout {
            // Inverted dropout as PyTorch: keep with probability 1−p, scale kept values by 1/(1−p).
            let count = rows * inFeatures, keep = 1 - dropout
            var rng = dropoutRNG
            keepMask.withUnsafeMutableBufferPointer { m in
                for i in 0..<count { m[i] = rng.nextUniform() < keep ? 1 : 0 }
            }
            dropoutRNG = rng
            let xd = scratch.reserve(count)
            applyMask(out: xd, input: input, rows: rows)
            x = UnsafePointer(xd)
        }
        // h = x Aᵀ: (N, in)·(in, r) -> (N, r)
        GEMM.linear(out: h.data, input: x, weight: a.data, rows: rows, inFeatures: inFeatures, outFeatures: rank)
        // g = h ⊙ eᵀ (each column i scaled by e_i)
        let r = rank, hp = h.data, gp = g.data, ep = e.data
        for n in 0..<rows { for i in 0..<r { gp[n * r + i] = hp[n * r + i] * ep[i] } }
        // out += s · g Bᵀ: (N, r)·(r, out) -> (N, out)
        GEMM.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: rank, alpha: effectiveScale,
                   a: g.data, lda: rank, b: b.data, ldb: rank, beta: 1, c: out, ldc: outFeatures)
    }

    /// Backward of the last `forward` (same `input`): dB += s·dOutᵀ g, dG = s·dOut B, de += Σₙ dG ⊙ h,
    /// dh = dG ⊙ e, dA += dhᵀ dropout(x), dInput += mask ⊙ (dh A) / (1−p).
    public func backward(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                         rows: Int) {
        precondition(rows == lastRows, "SVDLinear.backward over \(rows) rows after a forward over \(lastRows)")
        if rank == 0 { return }
        let s = effectiveScale, r = rank
        if trainable {
            // out += s · g Bᵀ  =>  dB (out, r) += s · dOutᵀ (out, N) · g (N, r)
            GEMM.sgemm(transA: true, transB: false, m: outFeatures, n: r, k: rows, alpha: s,
                       a: dOut, lda: outFeatures, b: g.data, ldb: r, beta: 1, c: bGradient.data, ldc: r)
        }
        // dG (N, r) = s · dOut (N, out) · B (out, r)
        GEMM.sgemm(transA: false, transB: false, m: rows, n: r, k: outFeatures, alpha: s,
                   a: dOut, lda: outFeatures, b: b.data, ldb: r, beta: 0, c: dG.data, ldc: r)
        let hp = h.data, dgp = dG.data, ep = e.data
        if trainable {
            // g = h ⊙ e  =>  de_i += Σₙ dG[n, i] · h[n, i]
            let de = eGradient.data
            for n in 0..<rows { for i in 0..<r { de[i] += dgp[n * r + i] * hp[n * r + i] } }
        }
        // g = h ⊙ e  =>  dh = dG ⊙ e, in place (dG is not needed any more)
        for n in 0..<rows { for i in 0..<r { dgp[n * r + i] *= ep[i] } }
        guard lastUsedDropout else {
            if trainable {
                // h = x Aᵀ  =>  dA (r, in) += dhᵀ (r, N) · x (N, in)
                GEMM.linearBackwardWeight(dWeight: aGradient.data, dOut: dgp, input: input, rows: rows,
                                          inFeatures: inFeatures, outFeatures: r)
            }
            // dx (N, in) += dh A
            GEMM.linearBackwardInput(dInput: dInput, dOut: dgp, weight: a.data, rows: rows,
                                     inFeatures: inFeatures, outFeatures: r, accumulate: true)
            return
        }
        let panel = scratch.reserve(rows * inFeatures)
        if trainable {
            // h = dropout(x) Aᵀ  =>  dA += dhᵀ · dropout(x), the dropped-out input rebuilt from the mask
            applyMask(out: panel, input: input, rows: rows)
            GEMM.linearBackwardWeight(dWeight: aGradient.data, dOut: dgp, input: panel, rows: rows,
                                      inFeatures: inFeatures, outFeatures: r)
        }
        // dx (N, in) += mask ⊙ (dh A) / (1−p)
        GEMM.linearBackwardInput(dInput: panel, dOut: dgp, weight: a.data, rows: rows,
                                 inFeatures: inFeatures, outFeatures: r, accumulate: false)
        let kept = 1 / (1 - dropout), inF = inFeatures
        keepMask.withUnsafeBufferPointer { m in
            parallelFor(rows, minChunk: 64) { range in
                for i in range.lowerBound * inF..<range.upperBound * inF where m[i] != 0 { dInput[i] += panel[i] * kept }
            }
        }
    }

    /// diag(e)·A, [r, in]: the A a plain LoRA needs to compute this adapter's update (as llama.cpp does).
    public func eScaledA() -> Tensor {
        let scaledA = a.clone()
        for i in 0..<rank { for j in 0..<inFeatures { scaledA.data[i * inFeatures + j] *= e.data[i] } }
        return scaledA
    }

    /// weight[out, in] += s·B·diag(e)·A, in place: PEFT's merge of an SVDLinear.
    public func addDelta(to weight: Tensor) {
        precondition(weight.shape == [outFeatures, inFeatures], "AdaLoRA merge: \(weight.shape) vs adapter")
        guard rank > 0 else { return }
        let scaledA = eScaledA()
        // (out, r)·(r, in) -> (out, in)
        GEMM.sgemm(transA: false, transB: false, m: outFeatures, n: inFeatures, k: rank, alpha: effectiveScale,
                   a: b.data, lda: rank, b: scaledA.data, ldb: inFeatures, beta: 1, c: weight.data, ldc: inFeatures)
    }

    /// The merged weight update s·B·diag(e)·A, [out, in] (PEFT's `get_delta_weight`).
    public func deltaWeight() -> Tensor {
        let delta = Tensor(shape: [outFeatures, inFeatures])
        addDelta(to: delta)
        return delta
    }
}
