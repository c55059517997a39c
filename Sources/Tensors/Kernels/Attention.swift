import Foundation

/// Causal scaled-dot-product attention with grouped-query heads and right padding.
///
/// Legend: B = batch, T = seqLen, H = heads, KVH = kvHeads, hd = headDim, G = H / KVH query heads per
/// key/value head (query head h reads kv head h / G). Row r = b·T + t of q holds all H heads of that token,
/// so q is (B, T, H, hd) and k, v are (B, T, KVH, hd). Query t of example b attends key j when j ≤ t and
/// j < lengths[b]; a query with no such key (lengths[b] == 0) gets zero probabilities and a zero output.
///
/// The products run per (b, h) as whole-panel `GEMM.sgemm` calls on OpenBLAS's threads, reading the head's
/// columns in place through the leading dimension (H·hd for q, KVH·hd for k and v); the softmax rows run on
/// `parallelFor` between them. Rows go in blocks of `rowBlock` queries, and each block multiplies only
/// against the keys its last query may see, which skips most of the causal upper triangle and all padded keys.
public enum Attention {
    /// Queries per block: each block's products stop at key min(blockEnd, length).
    static let rowBlock = 64

    /// Floats of scratch `backward` needs: one T × T panel.
    public static func scratchCount(seqLen: Int) -> Int { seqLen * seqLen }

    /// Attention forward.
    ///
    /// q is (B, T, H, hd), k and v are (B, T, KVH, hd), lengths is (B)
    /// -> out is (B, T, H, hd), probs is (B, H, T, T) (every entry written; saved for `backward`).
    public static func forward(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
                               q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                               lengths: UnsafePointer<Int32>, batch: Int, seqLen: Int,
                               heads: Int, kvHeads: Int, headDim: Int) {
        let T = seqLen, hd = headDim
        let shape = Shape(seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim)
        let scale = Float(1 / Double(hd).squareRoot())
        // scores = scale · Q Kᵀ, one (rows × keys) panel per block of queries
        for b in 0..<batch {
            let length = shape.length(lengths, b)
            for h in 0..<heads {
                let qHead = q + shape.queryOffset(b, h), kHead = k + shape.keyOffset(b, h)
                let scores = probs + (b * heads + h) * T * T
                forEachRowBlock(seqLen: T, length: length) { t0, t1, keys in
                    GEMM.sgemm(transA: false, transB: true, m: t1 - t0, n: keys, k: hd, alpha: scale,
                               a: qHead + t0 * shape.qStride, lda: shape.qStride,
                               b: kHead, ldb: shape.kvStride,
                               beta: 0, c: scores + t0 * T, ldc: T)
                }
            }
        }
        // probs = softmax over the allowed keys of each row, zeros elsewhere
        parallelFor(batch * heads * T, minChunk: max(1, 4_096 / max(T, 1))) { range in
            for rowIndex in range {
                let b = rowIndex / (heads * T), t = rowIndex % T
                let allowed = min(t + 1, shape.length(lengths, b))
                let row = probs + rowIndex * T
                softmaxPrefix(row, allowed: allowed, count: T)
            }
        }
        // out = P V; a block whose rows see no key (keys == 0) is zero-filled by GEMM.sgemm
        for b in 0..<batch {
            let length = shape.length(lengths, b)
            for h in 0..<heads {
                let vHead = v + shape.keyOffset(b, h), outHead = out + shape.queryOffset(b, h)
                let p = UnsafePointer(probs + (b * heads + h) * T * T)
                forEachRowBlock(seqLen: T, length: length) { t0, t1, keys in
                    GEMM.sgemm(transA: false, transB: false, m: t1 - t0, n: hd, k: keys,
                               a: p + t0 * T, lda: T, b: vHead, ldb: shape.kvStride,
                               beta: 0, c: outHead + t0 * shape.qStride, ldc: shape.qStride)
                }
            }
        }
    }

    /// Attention backward. OVERWRITES dQ, dK and dV (it does not accumulate): several query heads share a
    /// key/value head, so their contributions are summed here, starting from zero.
    ///
    /// dOut is (B, T, H, hd), probs (B, H, T, T) from `forward`, q (B, T, H, hd), k and v (B, T, KVH, hd),
    /// scratch holds `scratchCount(seqLen:)` floats -> dQ is (B, T, H, hd), dK and dV are (B, T, KVH, hd).
    public static func backward(dQ: UnsafeMutablePointer<Float>, dK: UnsafeMutablePointer<Float>,
                                dV: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                probs: UnsafePointer<Float>, q: UnsafePointer<Float>,
                                k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                lengths: UnsafePointer<Int32>, batch: Int, seqLen: Int,
                                heads: Int, kvHeads: Int, headDim: Int,
                                scratch: UnsafeMutablePointer<Float>) {
        let T = seqLen, hd = headDim
        let shape = Shape(seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim)
        let scale = Float(1 / Double(hd).squareRoot())
        dK.update(repeating: 0, count: batch * T * shape.kvStride)
        dV.update(repeating: 0, count: batch * T * shape.kvStride)
        let dScores = scratch  // dP, then dS in place: (T, T)
        for b in 0..<batch {
            let length = shape.length(lengths, b)
            for h in 0..<heads {
                let qOffset = shape.queryOffset(b, h), kvOffset = shape.keyOffset(b, h)
                let p = probs + (b * heads + h) * T * T
                if length == 0 {
                    // no key was attended: out was zero whatever q, k, v were
                    for t in 0..<T { (dQ + qOffset + t * shape.qStride).update(repeating: 0, count: hd) }
                    continue
                }
                forEachRowBlock(seqLen: T, length: length) { t0, t1, keys in
                    // out = P V  =>  dV += Pᵀ dOut
                    GEMM.sgemm(transA: true, transB: false, m: keys, n: hd, k: t1 - t0,
                               a: p + t0 * T, lda: T, b: dOut + qOffset + t0 * shape.qStride, ldb: shape.qStride,
                               beta: 1, c: dV + kvOffset, ldc: shape.kvStride)
                    // out = P V  =>  dP = dOut Vᵀ
                    GEMM.sgemm(transA: false, transB: true, m: t1 - t0, n: keys, k: hd,
                               a: dOut + qOffset + t0 * shape.qStride, lda: shape.qStride,
                               b: v + kvOffset, ldb: shape.kvStride,
                               beta: 0, c: dScores + t0 * T, ldc: T)
                }
                // P = softmax(S)  =>  dS = P ∘ (dP − Σ_j P∘dP), over the columns the products below read
                parallelFor(T, minChunk: max(1, 4_096 / max(T, 1))) { range in
                    for t in range {
                        let allowed = min(t + 1, length)
                        let pRow = p + t * T, dRow = dScores + t * T
                        let dot = dotProduct(pRow, dRow, count: allowed)
                        for j in 0..<allowed { dRow[j] = pRow[j] * (dRow[j] - dot) }
                        let keys = blockKeys(row: t, seqLen: T, length: length)
                        if keys > allowed { (dRow + allowed).update(repeating: 0, count: keys - allowed) }
                    }
                }
                forEachRowBlock(seqLen: T, length: length) { t0, t1, keys in
                    let dS = UnsafePointer(dScores + t0 * T)
                    // S = scale · Q Kᵀ  =>  dQ = scale · dS K
                    GEMM.sgemm(transA: false, transB: false, m: t1 - t0, n: hd, k: keys, alpha: scale,
                               a: dS, lda: T, b: k + kvOffset, ldb: shape.kvStride,
                               beta: 0, c: dQ + qOffset + t0 * shape.qStride, ldc: shape.qStride)
                    // S = scale · Q Kᵀ  =>  dK += scale · dSᵀ Q
                    GEMM.sgemm(transA: true, transB: false, m: keys, n: hd, k: t1 - t0, alpha: scale,
                               a: dS, lda: T, b: q + qOffset + t0 * shape.qStride, ldb: shape.qStride,
                               beta: 1, c: dK + kvOffset, ldc: shape.kvStride)
                }
            }
        }
    }

    /// Strides and offsets of the row layouts: example b's rows start at starts[b] (b·T when `starts` is nil).
    struct Shape {
        let seqLen: Int, headDim: Int, groupSize: Int
        let qStride: Int, kvStride: Int
        let starts: UnsafePointer<Int>?

        init(seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, starts: UnsafePointer<Int>? = nil) {
            precondition(kvHeads > 0 && heads % kvHeads == 0,
                         "attention heads \(heads) must be a multiple of key/value heads \(kvHeads)")
            self.seqLen = seqLen
            self.headDim = headDim
            groupSize = heads / kvHeads
            qStride = heads * headDim
            kvStride = kvHeads * headDim
            self.starts = starts
        }

        /// The first row of example b.
        func start(_ b: Int) -> Int { starts.map { $0[b] } ?? b * seqLen }
        /// The rows example b owns (at most T): its tokens, then padding.
        func span(_ b: Int) -> Int {
            let span = start(b + 1) - start(b)
            precondition(span >= 0 && span <= seqLen, "attention example \(b) owns \(span) rows, outside 0...\(seqLen)")
            return span
        }

        /// Where query head h of example b starts.
        func queryOffset(_ b: Int, _ h: Int) -> Int { start(b) * qStride + h * headDim }
        /// Where the key/value head read by query head h of example b starts.
        func keyOffset(_ b: Int, _ h: Int) -> Int { start(b) * kvStride + (h / groupSize) * headDim }

        func length(_ lengths: UnsafePointer<Int32>, _ b: Int) -> Int {
            let length = Int(lengths[b])
            precondition(length >= 0 && length <= span(b), "attention length \(length) outside 0...\(span(b))")
            return length
        }
    }

    /// Calls body(t0, t1, keys) for each block of queries t0..<t1, keys = the keys its last row may see.
    @inline(__always)
    static func forEachRowBlock(seqLen: Int, length: Int, _ body: (Int, Int, Int) -> Void) {
        var t0 = 0
        while t0 < seqLen {
            let t1 = min(seqLen, t0 + rowBlock)
            body(t0, t1, min(t1, length))
            t0 = t1
        }
    }

    /// The `keys` of the block holding query `row` in `forEachRowBlock`.
    @inline(__always)
    private static func blockKeys(row: Int, seqLen: Int, length: Int) -> Int {
        min(min(seqLen, (row / rowBlock + 1) * rowBlock), length)
    }

    /// Stable softmax over x[0..<allowed], zeros in x[allowed..<count]; all zeros when allowed == 0.
    @inline(__always)
    private static func softmaxPrefix(_ x: UnsafeMutablePointer<Float>, allowed: Int, count: Int) {
        if allowed > 0 {
            let m = maximum(x, count: allowed)
            var sum: Float = 0
            for j in 0..<allowed {
                let e = Foundation.exp(x[j] - m)
                x[j] = e
                sum += e
            }
            let inverse = 1 / sum
            for j in 0..<allowed { x[j] *= inverse }
        }
        if count > allowed { (x + allowed).update(repeating: 0, count: count - allowed) }
    }
}
