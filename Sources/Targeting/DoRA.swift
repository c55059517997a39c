import MiniGPT
import Tensors

// DoRA (weight-decomposed low-rank adaptation, Liu et al. 2024) for a linear projection, as PEFT 0.21 computes it
// (peft/tuners/lora/dora.py, DoraLinearLayer.forward, and variants.py, DoraLinearVariant).
//
// With V = W + s·B·A (out, in), the adapted projection is m ⊙ (V x) / ‖V‖ row by row: every output row of V is
// rescaled to length m[o]. PEFT adds it on top of the base output W x as
//
//     delta = (c − 1) ⊙ (W xd) + c ⊙ (s · B A xd),    c[o] = m[o] / ‖W[o,:] + s·(B A)[o,:]‖
//
// with xd = dropout(x) (x itself outside training). The norm is detached (DoRA paper §4.3): in the backward it is
// a constant, so A and B get gradients only through the second term, and m through c.
//
// W xd is recomputed here rather than read from the projection's output: for o and down that output also holds the
// residual, other adapters may have added to it, and with dropout W x is not W xd. That is one more frozen product
// per DoRA projection, as in PEFT when dropout is on.
//
// Legend: N = rows (B·T), in/out = the projection's features, r = rank.

/// DoRA's per-adapter buffers: what the backward needs and the cached weight norm.
final class DoRABuffers {
    /// (N, out): W xd + s·B A xd, the un-normalised output of the last forward (the magnitude's gradient needs it).
    var combined = Tensor(shape: [0])
    /// (out): ‖W + s·B·A‖ per row for the parameters `normKey` fingerprints.
    let weightNorm: Tensor
    /// (out): c = m / ‖W + s·B·A‖ of the last forward.
    let factor: Tensor
    /// (out): Σ over rows of dOut ⊙ combined, per output (scratch of the backward).
    let columnSums: Tensor
    /// Fingerprint of (A, B, scale, W) that `weightNorm` was computed for; nil when it was never computed.
    var normKey: UInt64?

    init(outFeatures: Int) {
        weightNorm = Tensor(shape: [outFeatures])
        factor = Tensor(shape: [outFeatures])
        columnSums = Tensor(shape: [outFeatures])
    }

    func reserve(_ count: Int) {
        if combined.count < count { combined = Tensor(shape: [count]) }
    }
}

extension LoRALinear {
    /// Binds the frozen base weight W, (out, in), that DoRA normalises, as the model stores it (attaching a set does
    /// this).
    public func bindBase(_ weight: FrozenWeight) {
        precondition(weight.shape == [outFeatures, inFeatures],
                     "\(site.moduleName): base weight \(weight.shape) does not fit the adapter [\(outFeatures), \(inFeatures)]")
        baseWeight = weight
    }

    /// Binds an F32 base weight W, (out, in).
    public func bindBase(_ weight: Tensor) { bindBase(.f32(weight)) }

    private func boundBase() -> FrozenWeight {
        guard let baseWeight else {
            preconditionFailure("DoRA adapter on \(site.moduleName) used before its base weight was bound (AdapterSet.attach does it)")
        }
        return baseWeight
    }

    /// ‖W + s·B·A‖ per row, (out), computed again only when A, B, the scale or W changed since the last call.
    ///
    /// The fingerprint reads A and B (r·(in + out) values), far less than the (out, in) product it saves: generation
    /// and evaluation reuse the norm, training (parameters change every step) recomputes it every forward as PEFT does.
    func doraWeightNorm() -> Tensor {
        guard let dora else { preconditionFailure("doraWeightNorm on a plain LoRA adapter") }
        let w = boundBase()
        var key: UInt64 = 0xCBF2_9CE4_8422_2325   // FNV-1a over the bit patterns
        func mix(_ bits: UInt64) { key = (key ^ bits) &* 0x0000_0100_0000_01B3 }
        for i in 0..<a.count { mix(UInt64(a.data[i].bitPattern)) }
        for i in 0..<b.count { mix(UInt64(b.data[i].bitPattern)) }
        mix(UInt64(effectiveScale.bitPattern))
        mix(UInt64(w.storageIdentity))
        if dora.normKey == key { return dora.weightNorm }

        // V = W + s · B · A, a block of rows at a time: W's rows are copied, or dequantized from NF4, into a panel
        // of the block's size, so a QLoRA base is never held in F32 whole.
        let outF = outFeatures, inF = inFeatures, r = rank, s = effectiveScale
        let aData = UnsafePointer(a.data), bData = UnsafePointer(b.data), norm = dora.weightNorm.data
        // 128 rows per product: fewer rows would repack A (r × in) in OpenBLAS more often than the rows cost
        let blockRows = 128
        parallelFor((outF + blockRows - 1) / blockRows) { blocks in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: blockRows * inF) { panel in
                let v = panel.baseAddress!
                for block in blocks {
                    let o0 = block * blockRows, o1 = min(outF, o0 + blockRows)
                    w.copyRows(o0..<o1, into: v)
                    // V rows (o1−o0, in) += s · B rows (o1−o0, r) · A (r, in)
                    GEMM.sgemmSerial(transA: false, transB: false, m: o1 - o0, n: inF, k: r, alpha: s,
                                     a: bData + o0 * r, lda: r, b: aData, ldb: inF, beta: 1, c: v, ldc: inF)
                    for o in o0..<o1 {
                        var sum = 0.0
                        for i in 0..<inF { let value = Double(v[(o - o0) * inF + i]); sum += value * value }
                        norm[o] = Float(sum.squareRoot())
                    }
                }
            }
        }
        dora.normKey = key
        return dora.weightNorm
    }

    /// c = m / ‖W + s·B·A‖ into `dora.factor`.
    private func updateFactor(_ dora: DoRABuffers) {
        let norm = doraWeightNorm().data
        guard let m = magnitude?.data else { return }
        for o in 0..<outFeatures { dora.factor.data[o] = m[o] / norm[o] }
    }

    /// out[N, out] += (c − 1) ⊙ (xd Wᵀ) + c ⊙ (s · xd Aᵀ Bᵀ); `x` is already dropped out when training.
    /// `known`: xd Wᵀ as the caller computed it (PEFT reuses the base layer's result too when there is no dropout),
    /// possibly `out` itself; nil: computed here.
    func doraForward(_ dora: DoRABuffers, out: UnsafeMutablePointer<Float>, input x: UnsafePointer<Float>, rows: Int,
                     base known: UnsafePointer<Float>?) {
        let w = boundBase(), outF = outFeatures
        updateFactor(dora)
        dora.reserve(rows * outF)
        let base = dora.combined.data
        if let known {
            base.update(from: known, count: rows * outF)
        } else {
            // base = xd Wᵀ: (N, in)·(in, out) -> (N, out)
            w.linear(out: base, input: x, rows: rows, inFeatures: inFeatures, outFeatures: outF)
        }
        // h = xd Aᵀ: (N, in)·(in, r) -> (N, r)
        GEMM.linear(out: h.data, input: x, weight: a.data, rows: rows, inFeatures: inFeatures, outFeatures: rank)
        // lora = s · h Bᵀ: (N, r)·(r, out) -> (N, out)
        let lora = scratch.reserve(rows * outF, slot: 1)
        GEMM.sgemm(transA: false, transB: true, m: rows, n: outF, k: rank, alpha: effectiveScale,
                   a: h.data, lda: rank, b: b.data, ldb: rank, beta: 0, c: lora, ldc: outF)
        // out += (c − 1)·base + c·lora, in PEFT's order; combined = base + lora stays for the backward
        let c = UnsafePointer(dora.factor.data)
        parallelFor(rows, minChunk: 16) { range in
            for row in range {
                let offset = row * outF
                for o in 0..<outF {
                    let baseValue = base[offset + o], loraValue = lora[offset + o]
                    out[offset + o] += (c[o] - 1) * baseValue + c[o] * loraValue
                    base[offset + o] = baseValue + loraValue
                }
            }
        }
    }

    /// Backward of `doraForward` (g = dOut, the norm constant):
    ///   dm[o]  += Σₙ g[n,o] · combined[n,o] / ‖V‖[o]
    ///   dB     += s · (g ⊙ c)ᵀ h,   dh = s · (g ⊙ c) B,   dA += dhᵀ xd
    ///   dxd     = (g ⊙ (c − 1)) W + dh A,   dInput += dropout mask ⊙ dxd / (1 − p)
    /// With `frozenTermFolded` (no dropout) the caller's frozen product was (g ⊙ c) W, which holds the first term.
    func doraBackward(_ dora: DoRABuffers, dInput: UnsafeMutablePointer<Float>, dOut g: UnsafePointer<Float>,
                      input: UnsafePointer<Float>, rows: Int, frozenTermFolded: Bool) {
        let w = boundBase(), s = effectiveScale, outF = outFeatures, inF = inFeatures
        let c = UnsafePointer(dora.factor.data)
        if trainable, let dm = magnitudeGradient?.data {
            let sums = dora.columnSums.data, combined = UnsafePointer(dora.combined.data)
            sums.update(repeating: 0, count: outF)
            for row in 0..<rows {
                let offset = row * outF
                for o in 0..<outF { sums[o] += g[offset + o] * combined[offset + o] }
            }
            let norm = dora.weightNorm.data
            for o in 0..<outF { dm[o] += sums[o] / norm[o] }
        }
        // gc = g ⊙ c, (N, out): the gradient reaching the branch s · B A xd
        let scaled = scratch.reserve(rows * outF, slot: 1)
        Elementwise.scaleColumns(out: scaled, g, by: c, rows: rows, columns: outF)
        if trainable {
            // lora = s · h Bᵀ  =>  dB (out, r) += s · gcᵀ (out, N) · h (N, r)
            GEMM.sgemm(transA: true, transB: false, m: outF, n: rank, k: rows, alpha: s,
                       a: scaled, lda: outF, b: h.data, ldb: rank, beta: 1, c: bGradient.data, ldc: rank)
        }
        // dh (N, r) = s · gc (N, out) · B (out, r)
        GEMM.sgemm(transA: false, transB: false, m: rows, n: rank, k: outF, alpha: s,
                   a: scaled, lda: outF, b: b.data, ldb: rank, beta: 0, c: dH.data, ldc: rank)
        guard lastUsedDropout else {
            if trainable {
                // h = x Aᵀ  =>  dA (r, in) += dhᵀ (r, N) · x (N, in)
                GEMM.linearBackwardWeight(dWeight: aGradient.data, dOut: dH.data, input: input, rows: rows,
                                          inFeatures: inF, outFeatures: rank)
            }
            // dx (N, in) += gb W + dh A, gb = g ⊙ (c − 1) (reusing gc's slot) — unless the caller's (g ⊙ c) W had it
            if !frozenTermFolded {
                Elementwise.scaleColumns(out: scaled, g, by: c, offset: -1, rows: rows, columns: outF)
                w.linearBackwardInput(dInput: dInput, dOut: scaled, rows: rows, inFeatures: inF, outFeatures: outF,
                                      accumulate: true)
            }
            GEMM.linearBackwardInput(dInput: dInput, dOut: dH.data, weight: a.data, rows: rows,
                                     inFeatures: inF, outFeatures: rank, accumulate: true)
            return
        }
        Elementwise.scaleColumns(out: scaled, g, by: c, offset: -1, rows: rows, columns: outF)
        let panel = scratch.reserve(rows * inF)
        if trainable {
            // h = xd Aᵀ  =>  dA += dhᵀ · xd, the dropped-out input rebuilt from the mask
            applyMask(out: panel, input: input, rows: rows)
            GEMM.linearBackwardWeight(dWeight: aGradient.data, dOut: dH.data, input: panel, rows: rows,
                                      inFeatures: inF, outFeatures: rank)
        }
        // dxd (N, in) = gb W + dh A; dx += mask ⊙ dxd / (1 − p)
        w.linearBackwardInput(dInput: panel, dOut: scaled, rows: rows, inFeatures: inF, outFeatures: outF,
                              accumulate: false)
        GEMM.linearBackwardInput(dInput: panel, dOut: dH.data, weight: a.data, rows: rows,
                                 inFeatures: inF, outFeatures: rank, accumulate: true)
        let kept = 1 / (1 - dropout)
        keepMask.withUnsafeBufferPointer { m in
            parallelFor(rows, minChunk: 64) { range in
                for i in range.lowerBound * inF..<range.upperBound * inF where m[i] != 0 { dInput[i] += panel[i] * kept }
            }
        }
    }

    /// The merged update of a DoRA adapter, [out, in]: c ⊙ (W + s·B·A) − W, so that W + delta = c ⊙ (W + s·B·A),
    /// PEFT's merge (`dora_factor * (W + delta_weight)`).
    func doraDeltaWeight() -> Tensor {
        let w = boundBase(), outF = outFeatures, inF = inFeatures
        let norm = doraWeightNorm().data
        guard let m = magnitude?.data else { preconditionFailure("doraDeltaWeight on a plain LoRA adapter") }
        let delta = Tensor(shape: [outF, inF])
        // delta (out, in) = s · B · A, then c ⊙ (W + delta) − W row by row
        GEMM.sgemm(transA: false, transB: false, m: outF, n: inF, k: rank, alpha: effectiveScale,
                   a: b.data, lda: rank, b: a.data, ldb: inF, beta: 0, c: delta.data, ldc: inF)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: inF) { row in
            for o in 0..<outF {
                let c = m[o] / norm[o]
                w.copyRows(o..<o + 1, into: row.baseAddress!)
                for i in 0..<inF {
                    let weight = row[i]
                    delta.data[o * inF + i] = c * (weight + delta.data[o * inF + i]) - weight
                }
            }
        }
        return delta
    }

    /// Sets m to ‖W + s·B·A‖ per row, PEFT's initial magnitude (with B = 0: the row norms of W), so a new DoRA
    /// adapter starts as the identity.
    func initializeMagnitude() {
        guard let magnitude else { return }
        magnitude.copy(from: doraWeightNorm())
    }
}
