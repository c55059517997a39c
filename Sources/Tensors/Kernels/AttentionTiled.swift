import Foundation

/// Causal attention that never keeps a T × T matrix: the forward saves one log-sum-exp per (query, head) and the
/// backward recomputes each block's probabilities from it (FlashAttention's recomputation, with whole key rows
/// per block instead of an online softmax, since a block of 64 queries × T keys fits in cache for any T LoRAKit
/// trains on).
///
/// Same masking as `Attention.forward` (legend there): query t of example b sees keys j ≤ t with j < lengths[b].
/// Rows are tokens: q is (rows, H, hd), k and v are (rows, KVH, hd). Example b owns rows starts[b]..<starts[b+1]
/// (its tokens, then any padding; every row it owns is written) — with `starts` nil, rows b·T..<(b+1)·T, the
/// padded (B, T) layout; a packed batch passes its own `starts` and owns no padding rows. What a layer keeps for
/// its backward drops from B·H·T² probabilities to H floats per row — 12.6 MB to 49 KB per layer at B = 4,
/// H = 12, T = 256.
///
/// Work is split over threads by (example, head) in the forward and by (example, key/value head) in the backward,
/// so every dK and dV row has one owner and sums in a fixed order; products inside a task are serial
/// `GEMM.sgemmSerial` calls on blocks of `Attention.rowBlock` queries, each against the keys its last query may see.
extension Attention {
    /// Tiled attention forward.
    ///
    /// q (rows, H, hd), k and v (rows, KVH, hd), lengths (B), starts (B + 1, or nil for the padded layout) ->
    /// out (rows, H, hd), logSumExp (rows, H): the log of each query row's softmax denominator, scores included
    /// (−∞ for a row that sees no key).
    public static func forward(out: UnsafeMutablePointer<Float>, logSumExp: UnsafeMutablePointer<Float>,
                               q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                               lengths: UnsafePointer<Int32>, starts: UnsafePointer<Int>? = nil, batch: Int, seqLen: Int,
                               heads: Int, kvHeads: Int, headDim: Int) {
        let T = seqLen, hd = headDim
        let shape = Shape(seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim, starts: starts)
        let scale = Float(1 / Double(hd).squareRoot())
        for b in 0..<batch { _ = shape.length(lengths, b) }
        parallelFor(batch * heads) { tasks in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: rowBlock * T)
            defer { scores.deallocate() }
            for task in tasks {
                let b = task / heads, h = task % heads
                let length = shape.length(lengths, b)
                let qHead = q + shape.queryOffset(b, h), kHead = k + shape.keyOffset(b, h)
                let vHead = v + shape.keyOffset(b, h), outHead = out + shape.queryOffset(b, h)
                // the log-sum-exp of query t of this head, H floats apart
                let lse = logSumExp + shape.start(b) * heads + h
                forEachRowBlock(seqLen: shape.span(b), length: length) { t0, t1, keys in
                    let rows = t1 - t0
                    guard keys > 0 else {
                        for t in t0..<t1 {
                            (outHead + t * shape.qStride).update(repeating: 0, count: hd)
                            lse[t * heads] = -.infinity
                        }
                        return
                    }
                    // S (rows, keys) = scale · Q Kᵀ
                    GEMM.sgemmSerial(transA: false, transB: true, m: rows, n: keys, k: hd, alpha: scale,
                                     a: qHead + t0 * shape.qStride, lda: shape.qStride, b: kHead, ldb: shape.kvStride,
                                     beta: 0, c: scores, ldc: keys)
                    // P = softmax over each row's allowed keys, zeros after them
                    for t in t0..<t1 {
                        let row = scores + (t - t0) * keys
                        let allowed = min(t + 1, length)
                        let m = maximumLanes(row, count: allowed)
                        let sum = exponentiateShifted(row, count: allowed, shift: m)
                        scaleLanes(row, count: allowed, by: Float(1 / sum))
                        if keys > allowed { (row + allowed).update(repeating: 0, count: keys - allowed) }
                        lse[t * heads] = m + Float(Foundation.log(sum))
                    }
                    // out (rows, hd) = P V
                    GEMM.sgemmSerial(transA: false, transB: false, m: rows, n: hd, k: keys,
                                     a: scores, lda: keys, b: vHead, ldb: shape.kvStride,
                                     beta: 0, c: outHead + t0 * shape.qStride, ldc: shape.qStride)
                }
            }
        }
    }

    /// Tiled attention backward. OVERWRITES dQ, dK and dV.
    ///
    /// dOut and out (rows, H, hd), logSumExp (rows, H) from the tiled `forward`, q (rows, H, hd), k and v
    /// (rows, KVH, hd), the same lengths and starts -> dQ (rows, H, hd), dK and dV (rows, KVH, hd).
    /// With P = exp(S − lse) recomputed per block and D_t = Σ dOut_t ∘ out_t:
    /// dV = Pᵀ dOut, dS = P ∘ (dOut Vᵀ − D), dQ = scale · dS K, dK = scale · dSᵀ Q.
    public static func backward(dQ: UnsafeMutablePointer<Float>, dK: UnsafeMutablePointer<Float>,
                                dV: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                out: UnsafePointer<Float>, logSumExp: UnsafePointer<Float>,
                                q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                lengths: UnsafePointer<Int32>, starts: UnsafePointer<Int>? = nil, batch: Int, seqLen: Int,
                                heads: Int, kvHeads: Int, headDim: Int) {
        let T = seqLen, hd = headDim
        let shape = Shape(seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim, starts: starts)
        let scale = Float(1 / Double(hd).squareRoot())
        for b in 0..<batch { _ = shape.length(lengths, b) }
        parallelFor(batch * kvHeads) { tasks in
            let probs = UnsafeMutablePointer<Float>.allocate(capacity: rowBlock * T)
            let dScores = UnsafeMutablePointer<Float>.allocate(capacity: rowBlock * T)
            defer { probs.deallocate(); dScores.deallocate() }
            for task in tasks {
                let b = task / kvHeads, kvHead = task % kvHeads
                let length = shape.length(lengths, b), span = shape.span(b)
                let kvOffset = shape.start(b) * shape.kvStride + kvHead * hd
                for t in 0..<span {
                    (dK + kvOffset + t * shape.kvStride).update(repeating: 0, count: hd)
                    (dV + kvOffset + t * shape.kvStride).update(repeating: 0, count: hd)
                }
                for h in kvHead * shape.groupSize..<(kvHead + 1) * shape.groupSize {
                    let qOffset = shape.queryOffset(b, h)
                    let lse = logSumExp + shape.start(b) * heads + h
                    forEachRowBlock(seqLen: span, length: length) { t0, t1, keys in
                        let rows = t1 - t0
                        guard keys > 0 else {
                            // no key was attended: out was zero whatever q, k, v were
                            for t in t0..<t1 { (dQ + qOffset + t * shape.qStride).update(repeating: 0, count: hd) }
                            return
                        }
                        let qBlock = q + qOffset + t0 * shape.qStride, dOutBlock = dOut + qOffset + t0 * shape.qStride
                        // S = scale · Q Kᵀ again, then P = exp(S − lse) on the allowed keys
                        GEMM.sgemmSerial(transA: false, transB: true, m: rows, n: keys, k: hd, alpha: scale,
                                         a: qBlock, lda: shape.qStride, b: k + kvOffset, ldb: shape.kvStride,
                                         beta: 0, c: probs, ldc: keys)
                        for t in t0..<t1 {
                            let row = probs + (t - t0) * keys
                            let allowed = min(t + 1, length)
                            exponentiateShifted(row, count: allowed, shift: lse[t * heads])
                            if keys > allowed { (row + allowed).update(repeating: 0, count: keys - allowed) }
                        }
                        // out = P V  =>  dV += Pᵀ dOut
                        GEMM.sgemmSerial(transA: true, transB: false, m: keys, n: hd, k: rows,
                                         a: probs, lda: keys, b: dOutBlock, ldb: shape.qStride,
                                         beta: 1, c: dV + kvOffset, ldc: shape.kvStride)
                        // out = P V  =>  dP = dOut Vᵀ
                        GEMM.sgemmSerial(transA: false, transB: true, m: rows, n: keys, k: hd,
                                         a: dOutBlock, lda: shape.qStride, b: v + kvOffset, ldb: shape.kvStride,
                                         beta: 0, c: dScores, ldc: keys)
                        // P = softmax(S)  =>  dS = P ∘ (dP − Σ_j P∘dP), and Σ_j P∘dP = dOut · out
                        for t in t0..<t1 {
                            let d = dotProduct(dOut + qOffset + t * shape.qStride, out + qOffset + t * shape.qStride,
                                               count: hd)
                            softmaxBackwardRow(dScores + (t - t0) * keys, probs + (t - t0) * keys, dot: d, count: keys)
                        }
                        // S = scale · Q Kᵀ  =>  dQ = scale · dS K
                        GEMM.sgemmSerial(transA: false, transB: false, m: rows, n: hd, k: keys, alpha: scale,
                                         a: dScores, lda: keys, b: k + kvOffset, ldb: shape.kvStride,
                                         beta: 0, c: dQ + qOffset + t0 * shape.qStride, ldc: shape.qStride)
                        // S = scale · Q Kᵀ  =>  dK += scale · dSᵀ Q
                        GEMM.sgemmSerial(transA: true, transB: false, m: keys, n: hd, k: rows, alpha: scale,
                                         a: dScores, lda: keys, b: qBlock, ldb: shape.qStride,
                                         beta: 1, c: dK + kvOffset, ldc: shape.kvStride)
                    }
                }
            }
        }
    }

    /// dS[j] = P[j] · (dP[j] − dot) over `count` floats, in place on dP (zero where P is zero).
    @inline(__always)
    private static func softmaxBackwardRow(_ dP: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>,
                                           dot: Float, count: Int) {
        var j = 0
        let d = Lanes(repeating: dot)
        while j + 8 <= count { storeLanes(loadLanes(p, j) * (loadLanes(dP, j) - d), dP, j); j += 8 }
        while j < count { dP[j] = p[j] * (dP[j] - dot); j += 1 }
    }
}

extension Attention {
    /// Attention of `rows` new queries over a key/value cache, for generation.
    ///
    /// q is (rows, H·hd) for positions start..<start+rows; keys and values are (≥ start+rows, KVH·hd), row j holding
    /// position j (keys after RoPE); scores is scratch of (H, ≥ start+rows) -> out (rows, H·hd). Query i sees keys
    /// 0...start+i. Heads run in parallel, each with its own row of `scores`.
    public static func cachedForward(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                                     keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                     scores: UnsafeMutablePointer<Float>, scoresStride: Int,
                                     rows: Int, start: Int, heads: Int, kvHeads: Int, headDim: Int) {
        precondition(kvHeads > 0 && heads % kvHeads == 0,
                     "attention heads \(heads) must be a multiple of key/value heads \(kvHeads)")
        precondition(start + rows <= scoresStride, "attention scratch holds \(scoresStride) keys, \(start + rows) needed")
        let hd = headDim, group = heads / kvHeads, qStride = heads * hd, kvStride = kvHeads * hd
        let scale = Float(1 / Double(hd).squareRoot())
        parallelFor(heads) { range in
            for h in range {
                let s = scores + h * scoresStride, kvColumn = (h / group) * hd
                for i in 0..<rows {
                    let visible = start + i + 1
                    let qh = q + i * qStride + h * hd
                    // s_j = scale · q·k_j
                    for j in 0..<visible { s[j] = scale * dotProduct(qh, keys + j * kvStride + kvColumn, count: hd) }
                    let m = maximumLanes(s, count: visible)
                    let sum = exponentiateShifted(s, count: visible, shift: m)
                    // out = Σ_j softmax_j v_j
                    let o = out + i * qStride + h * hd
                    o.update(repeating: 0, count: hd)
                    let inverse = Float(1 / sum)
                    for j in 0..<visible {
                        let p = s[j] * inverse, vj = values + j * kvStride + kvColumn
                        var c = 0
                        while c + 8 <= hd { storeLanes(loadLanes(o, c) + p * loadLanes(vj, c), o, c); c += 8 }
                        while c < hd { o[c] += p * vj[c]; c += 1 }
                    }
                }
            }
        }
    }
}
