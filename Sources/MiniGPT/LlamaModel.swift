import Checkpoints
import Tensors

/// A LLaMA decoder: frozen (or trainable) weights, optional adapters on its projections, and the
/// forward and backward passes over padded batches.
///
/// Forward per block: RMSNorm → q,k,v → RoPE → causal attention → o → residual → RMSNorm → gate,up →
/// SwiGLU → down → residual. The backward is the same list bottom-up.
public final class LlamaModel {
    public let weights: LlamaWeights
    public let dims: ModelDimensions
    /// cos/sin for every position seen so far; grown when a longer sequence comes (transformers does not cap
    /// sequences at max_position_embeddings either: it is the trained context, not a limit of RoPE).
    private(set) var rope: RoPETable

    /// Adapters per block and projection; several on one projection add up.
    public private(set) var deltas: [[Projection: [ProjectionDelta]]]

    /// Weight gradients (same layout as `weights`), for full-parameter training; nil keeps the base frozen.
    public var weightGradients: LlamaWeights?

    /// Gradient checkpointing: the blocks a backward goes through keep only their input, and each runs its
    /// forward again just before its backward. Activation memory falls from a block's worth per block to one
    /// (N, D) tensor per block, for about a third more work; losses and gradients are the same, bit for bit.
    public var gradientCheckpointing = false

    private(set) var activations: Activations?
    /// dOut ⊙ c for a frozen product that folds in a DoRA adapter's term (`frozenBackwardInput`); grown on first use.
    private var foldScratch = Tensor(shape: [0])

    public init(weights: LlamaWeights) {
        self.weights = weights
        self.dims = weights.dims
        self.rope = RoPETable(headDim: weights.dims.headDim, maxPositions: weights.dims.maxPositions,
                              theta: weights.dims.ropeTheta)
        self.deltas = Array(repeating: [:], count: weights.dims.layers)
    }

    /// Adds `delta` to projection `projection` of block `layer`.
    public func attach(_ delta: ProjectionDelta, layer: Int, projection: Projection) {
        deltas[layer][projection, default: []].append(delta)
    }

    /// Removes every adapter.
    public func detachAll() { deltas = Array(repeating: [:], count: dims.layers) }

    /// The lowest block whose backward is needed: nothing below it has parameters to train.
    var lowestTrainedLayer: Int? {
        if weightGradients != nil { return 0 }
        return deltas.firstIndex { !$0.isEmpty }
    }

    /// The buffers for `batch` that keep activations from block `storedFrom` up (`dims.layers`: none). A set
    /// with room for more rows, or that keeps more than asked, serves too, so evaluation between training steps
    /// allocates nothing; packed batches, whose rows vary, grow the set by a quarter at a time.
    private func buffers(for batch: TokenBatch, storedFrom: Int) -> Activations {
        // a forward without backward (storedFrom == layers) keeps nothing and runs in any set
        let recomputes = gradientCheckpointing && storedFrom < dims.layers
        if let a = activations, a.capacity >= batch.rows, a.storedFrom <= storedFrom,
           a.recomputes == recomputes || storedFrom == dims.layers {
            a.prepare(for: batch)
            return a
        }
        // Keep the room the old set had; grow it by at least a quarter when the batch does not fit (not when only
        // more blocks must be kept), so a run's buffers settle after a few of its larger batches.
        var capacity = batch.rows
        if let old = activations {
            capacity = old.capacity >= batch.rows ? old.capacity : max(batch.rows, old.capacity + old.capacity / 4)
        }
        activations = nil  // free the old buffers before allocating the new ones
        let a = Activations(dims, capacity: (capacity + 63) / 64 * 64, storedFrom: storedFrom, recomputes: recomputes)
        a.prepare(for: batch)
        activations = a
        return a
    }

    /// Makes the RoPE table cover positions 0..<count.
    func ensurePositions(_ count: Int) {
        if count > rope.maxPositions {
            rope = RoPETable(headDim: dims.headDim, maxPositions: max(count, 2 * rope.maxPositions), theta: dims.ropeTheta)
        }
    }

    /// Checks ids and lengths against the model before any work (user data reaches here).
    public func validate(_ batch: TokenBatch) throws {
        ensurePositions(batch.seqLen)
        for (i, id) in batch.ids.enumerated() where id < 0 || Int(id) >= dims.vocab {
            let (b, t) = batch.location(ofRow: i)
            throw LoRAKitError("token id \(id) at position \(t) of sequence \(b) is outside the vocabulary (0..<\(dims.vocab))")
        }
        for (i, id) in batch.targets.enumerated() where Int(id) >= dims.vocab {
            let (b, t) = batch.location(ofRow: i)
            throw LoRAKitError("target id \(id) at position \(t) of sequence \(b) is outside the vocabulary (0..<\(dims.vocab))")
        }
    }

    // MARK: forward

    /// Adds the deltas of projection `p` to `out`. `outIsBase`: `out` holds exactly input · Wᵀ (no residual), which
    /// the first delta may read instead of recomputing it.
    func applyDeltas(_ layer: Int, _ p: Projection, out: UnsafeMutablePointer<Float>,
                             input: UnsafePointer<Float>, rows: Int, training: Bool, outIsBase: Bool = false) {
        guard let list = deltas[layer][p] else { return }
        for (i, d) in list.enumerated() {
            d.forward(out: out, input: input, rows: rows, training: training,
                      base: outIsBase && i == 0 ? UnsafePointer(out) : nil)
        }
    }

    /// Runs the blocks and the final norm; blocks from `storedFrom` up leave what their backward needs.
    private func forwardBlocks(_ batch: TokenBatch, training: Bool, storedFrom: Int) -> Activations {
        let a = buffers(for: batch, storedFrom: storedFrom)
        let n = a.rows, d = dims
        batch.ids.withUnsafeBufferPointer { ids in
            Embedding.forward(out: a.layer(0).input.data, table: weights.embedding.data, ids: ids.baseAddress!,
                              rows: n, dim: d.dim)
        }
        batch.lengths.withUnsafeBufferPointer { lengths in
            batch.starts.withUnsafeBufferPointer { starts in
                a.positions.withUnsafeBufferPointer { positions in
                    let layout = RowLayout(lengths: lengths.baseAddress!, starts: starts.baseAddress!,
                                           positions: positions.baseAddress!, batch: batch.batch, seqLen: batch.seqLen)
                    for l in 0..<d.layers { blockForward(l, a, layout, training: training) }
                }
            }
        }
        RMSNorm.forward(out: a.finalNormed.data, rstd: a.finalRstd.data, input: a.output.data,
                        weight: weights.finalNorm.data, rows: n, dim: d.dim, eps: d.normEps)
        return a
    }

    /// Where each sequence of a batch lies in the rows, for RoPE and attention.
    struct RowLayout {
        let lengths: UnsafePointer<Int32>
        let starts: UnsafePointer<Int>
        let positions: UnsafePointer<Int32>
        let batch: Int, seqLen: Int
    }

    /// Block `l`'s forward. Without `writesOutput` (the second forward of gradient checkpointing) it stops once
    /// what the backward reads is there: the FFN's output product and its adapters, whose own state is still
    /// that of the first forward, are left out.
    private func blockForward(_ l: Int, _ a: Activations, _ layout: RowLayout, training: Bool,
                              writesOutput: Bool = true) {
        let positions = layout.positions
        let w = weights.layers[l], s = a.layer(l), output = a.blockOutput(l), d = dims, n = a.rows
        let normed = a.normed, hidden = a.hidden
        // xn = RMSNorm(x)
        RMSNorm.forward(out: normed.data, rstd: s.attentionRstd.data, input: s.input.data,
                        weight: w.attentionNorm.data, rows: n, dim: d.dim, eps: d.normEps)
        // q, k, v = xn Wᵀ (+ adapters), then RoPE on q and k
        for (p, out) in [(Projection.q, s.q), (.k, s.k), (.v, s.v)] {
            let f = p.features(d)
            w.frozen(p).linear(out: out.data, input: normed.data, rows: n,
                               inFeatures: f.inFeatures, outFeatures: f.outFeatures)
            applyDeltas(l, p, out: out.data, input: normed.data, rows: n, training: training, outIsBase: true)
        }
        RoPE.forward(x: s.q.data, positions: positions, rows: n, heads: d.heads, headDim: d.headDim, table: rope)
        RoPE.forward(x: s.k.data, positions: positions, rows: n, heads: d.kvHeads, headDim: d.headDim, table: rope)
        // att = softmax(q kᵀ / √hd + mask) v
        Attention.forward(out: s.attention.data, logSumExp: s.logSumExp.data, q: s.q.data, k: s.k.data,
                          v: s.v.data, lengths: layout.lengths, starts: layout.starts, batch: layout.batch,
                          seqLen: layout.seqLen, heads: d.heads, kvHeads: d.kvHeads, headDim: d.headDim)
        // middle = x + att Woᵀ (+ adapter)
        s.middle.copy(from: s.input)
        w.frozen(.o).linear(out: s.middle.data, input: s.attention.data, rows: n,
                            inFeatures: d.qDim, outFeatures: d.dim, accumulate: true)
        applyDeltas(l, .o, out: s.middle.data, input: s.attention.data, rows: n, training: training)
        // hn = RMSNorm(middle); gate, up = hn Wᵀ; hidden = silu(gate)·up
        RMSNorm.forward(out: normed.data, rstd: s.ffnRstd.data, input: s.middle.data,
                        weight: w.ffnNorm.data, rows: n, dim: d.dim, eps: d.normEps)
        for (p, out) in [(Projection.gate, s.gate), (.up, s.up)] {
            w.frozen(p).linear(out: out.data, input: normed.data, rows: n, inFeatures: d.dim, outFeatures: d.ffnDim)
            applyDeltas(l, p, out: out.data, input: normed.data, rows: n, training: training, outIsBase: true)
        }
        guard writesOutput else { return }
        SwiGLU.forward(out: hidden.data, gate: s.gate.data, up: s.up.data, count: n * d.ffnDim)
        // out = middle + hidden Wdᵀ (+ adapter); out may be this block's own input (scratch), read no more
        output.copy(from: s.middle)
        w.frozen(.down).linear(out: output.data, input: hidden.data, rows: n,
                               inFeatures: d.ffnDim, outFeatures: d.dim, accumulate: true)
        applyDeltas(l, .down, out: output.data, input: hidden.data, rows: n, training: training)
    }

    /// Logits for every position of the batch, (B·T, V). Padded positions hold values that mean nothing.
    public func logits(_ batch: TokenBatch) throws -> Tensor {
        try validate(batch)
        let a = forwardBlocks(batch, training: false, storedFrom: dims.layers)
        let out = Tensor(shape: [a.rows, dims.vocab])
        GEMM.linear(out: out.data, input: a.finalNormed.data, weight: weights.lmHead.data, rows: a.rows,
                    inFeatures: dims.dim, outFeatures: dims.vocab)
        return out
    }

    // MARK: loss and backward

    /// Sum of the next-token cross-entropy over the batch's targets, and their count.
    ///
    /// With `backward`, also runs the backward pass with dL/dlogit scaled by `gradScale` (pass
    /// 1 / targets of the whole optimizer step, so that micro-batches add up to the mean): adapter
    /// gradients accumulate in the adapters, weight gradients in `weightGradients`.
    public func loss(_ batch: TokenBatch, backward: Bool, gradScale: Float = 1, training: Bool = true) throws
        -> (sum: Double, count: Int) {
        try validate(batch)
        let stop = backward ? lowestTrainedLayer : nil
        let a = forwardBlocks(batch, training: training, storedFrom: stop ?? dims.layers)
        let n = a.rows, d = dims
        let grads = stop != nil ? weightGradients : nil
        let g = stop != nil ? a.gradients : nil
        var sum = 0.0
        var count = 0
        batch.targets.withUnsafeBufferPointer { targets in
            var r0 = 0
            while r0 < n {
                let rows = min(a.chunkRows, n - r0)
                let chunkTargets = targets.baseAddress! + r0
                let counted = (0..<rows).reduce(0) { $0 + (chunkTargets[$1] >= 0 ? 1 : 0) }
                if counted == 0 {
                    // no loss here: no logits, and no gradient flows back from these rows
                    if let g { (g.dNormed.data + r0 * d.dim).update(repeating: 0, count: rows * d.dim) }
                    r0 += rows
                    continue
                }
                count += counted
                // logits = xn Wlmᵀ; CE; dlogits in place
                GEMM.linear(out: a.logitChunk.data, input: a.finalNormed.data + r0 * d.dim,
                            weight: weights.lmHead.data, rows: rows, inFeatures: d.dim, outFeatures: d.vocab)
                sum += CrossEntropy.forwardBackward(logits: a.logitChunk.data, targets: chunkTargets, rows: rows,
                                                    vocab: d.vocab, gradScale: gradScale, computeGradient: g != nil)
                if let g {
                    GEMM.linearBackwardInput(dInput: g.dNormed.data + r0 * d.dim, dOut: a.logitChunk.data,
                                             weight: weights.lmHead.data, rows: rows, inFeatures: d.dim,
                                             outFeatures: d.vocab, accumulate: false)
                    if let grads {
                        GEMM.linearBackwardWeight(dWeight: grads.lmHead.data, dOut: a.logitChunk.data,
                                                  input: a.finalNormed.data + r0 * d.dim, rows: rows,
                                                  inFeatures: d.dim, outFeatures: d.vocab)
                    }
                }
                r0 += rows
            }
        }
        if let stop, let g {
            g.dResidual.zero()
            RMSNorm.backward(dInput: g.dResidual.data, dWeight: grads?.finalNorm.data, dOut: g.dNormed.data,
                             input: a.output.data, weight: weights.finalNorm.data,
                             rstd: a.finalRstd.data, rows: n, dim: d.dim)
            batch.lengths.withUnsafeBufferPointer { lengths in
                batch.starts.withUnsafeBufferPointer { starts in
                    a.positions.withUnsafeBufferPointer { positions in
                        let layout = RowLayout(lengths: lengths.baseAddress!, starts: starts.baseAddress!,
                                               positions: positions.baseAddress!, batch: batch.batch, seqLen: batch.seqLen)
                        for l in stride(from: d.layers - 1, through: stop, by: -1) {
                            // the scratch still holds the top block's forward
                            if a.recomputes && l < d.layers - 1 { recomputeBlock(l, a, layout, training: training) }
                            blockBackward(l, a, g, layout, grads: grads?.layers[l],
                                          needInputGradient: l > stop || grads != nil)
                        }
                    }
                }
            }
            if let grads {
                batch.ids.withUnsafeBufferPointer { ids in
                    Embedding.backward(dTable: grads.embedding.data, dOut: g.dResidual.data, ids: ids.baseAddress!,
                                       rows: n, dim: d.dim)
                }
            }
        }
        return (sum, count)
    }

    /// Gradient checkpointing: block `l`'s forward again, from its checkpointed input, with the dropout masks of
    /// the first run, so that the scratch holds what that run computed.
    private func recomputeBlock(_ l: Int, _ a: Activations, _ layout: RowLayout, training: Bool) {
        for p in Projection.allCases where p != .down {
            for delta in deltas[l][p] ?? [] { delta.replayLastDropout() }
        }
        blockForward(l, a, layout, training: training, writesOutput: false)
    }

    /// `folded`: the frozen product of this projection took the first delta's term through W (`frozenBackwardInput`).
    private func deltasBackward(_ layer: Int, _ p: Projection, dInput: UnsafeMutablePointer<Float>,
                                dOut: UnsafePointer<Float>, input: UnsafePointer<Float>, rows: Int, folded: Bool) {
        guard let list = deltas[layer][p] else { return }
        for (i, d) in list.enumerated() {
            d.backward(dInput: dInput, dOut: dOut, input: input, rows: rows, frozenTermFolded: folded && i == 0)
        }
    }

    /// dInput (+)= dOut · W of projection `p` of block `layer`. Where its first delta offers a factor c
    /// (`frozenGradientFactor`: DoRA without dropout) the product is (dOut ⊙ c) · W, which also stands for that
    /// delta's own term through W; returns whether it did, for `deltasBackward`.
    private func frozenBackwardInput(_ layer: Int, _ p: Projection, dInput: UnsafeMutablePointer<Float>,
                                     dOut: UnsafePointer<Float>, rows: Int, accumulate: Bool) -> Bool {
        let f = p.features(dims), frozen = weights.layers[layer].frozen(p)
        guard let c = deltas[layer][p]?.first?.frozenGradientFactor else {
            frozen.linearBackwardInput(dInput: dInput, dOut: dOut, rows: rows, inFeatures: f.inFeatures,
                                       outFeatures: f.outFeatures, accumulate: accumulate)
            return false
        }
        let count = rows * f.outFeatures
        if foldScratch.count < count { foldScratch = Tensor(shape: [count]) }
        Elementwise.scaleColumns(out: foldScratch.data, dOut, by: c, rows: rows, columns: f.outFeatures)
        frozen.linearBackwardInput(dInput: dInput, dOut: foldScratch.data, rows: rows, inFeatures: f.inFeatures,
                                   outFeatures: f.outFeatures, accumulate: accumulate)
        return true
    }

    private func hasDeltas(_ layer: Int, _ projections: [Projection]) -> Bool {
        projections.contains { !(deltas[layer][$0]?.isEmpty ?? true) }
    }

    /// Turns dL/d(block output), held in `dResidual`, into dL/d(block input), in place.
    ///
    /// Without `needInputGradient` (the lowest trained block of a LoRA run: nothing below it to train) it stops once
    /// the adapters of q, k and v have their gradients: the products and the norm that lead to the block's input
    /// are skipped. Full-parameter training always needs it (the embedding's gradient).
    private func blockBackward(_ l: Int, _ a: Activations, _ g: GradientBuffers, _ layout: RowLayout,
                               grads: LayerWeights?, needInputGradient: Bool) {
        let w = weights.layers[l], s = a.layer(l), d = dims, n = a.rows, positions = layout.positions
        let dRes = g.dResidual.data
        // out = middle + hidden Wdᵀ: dHidden = dOut Wd
        let downFolded = frozenBackwardInput(l, .down, dInput: g.dHidden.data, dOut: dRes, rows: n, accumulate: false)
        if grads != nil || hasDeltas(l, [.down]) {
            // hidden = silu(gate)·up, rebuilt: the input of down's adapter and weight gradient
            SwiGLU.forward(out: a.hidden.data, gate: s.gate.data, up: s.up.data, count: n * d.ffnDim)
            deltasBackward(l, .down, dInput: g.dHidden.data, dOut: dRes, input: a.hidden.data, rows: n, folded: downFolded)
            if let grads {
                GEMM.linearBackwardWeight(dWeight: grads.down.data, dOut: dRes, input: a.hidden.data, rows: n,
                                          inFeatures: d.ffnDim, outFeatures: d.dim)
            }
        }
        // hidden = silu(gate)·up
        SwiGLU.backward(dGate: g.dGate.data, dUp: g.dUp.data, dOut: g.dHidden.data, gate: s.gate.data,
                        up: s.up.data, count: n * d.ffnDim)
        // gate, up = hn Wᵀ: dHn = dGate Wg + dUp Wu
        let gateFolded = frozenBackwardInput(l, .gate, dInput: g.dNormed.data, dOut: g.dGate.data, rows: n,
                                             accumulate: false)
        let upFolded = frozenBackwardInput(l, .up, dInput: g.dNormed.data, dOut: g.dUp.data, rows: n, accumulate: true)
        if grads != nil || hasDeltas(l, [.gate, .up]) {
            // hn = RMSNorm(middle), rebuilt
            RMSNorm.forward(out: a.normed.data, rstd: s.ffnRstd.data, input: s.middle.data,
                            weight: w.ffnNorm.data, rows: n, dim: d.dim, eps: d.normEps)
            deltasBackward(l, .gate, dInput: g.dNormed.data, dOut: g.dGate.data, input: a.normed.data, rows: n,
                           folded: gateFolded)
            deltasBackward(l, .up, dInput: g.dNormed.data, dOut: g.dUp.data, input: a.normed.data, rows: n,
                           folded: upFolded)
            if let grads {
                GEMM.linearBackwardWeight(dWeight: grads.gate.data, dOut: g.dGate.data, input: a.normed.data,
                                          rows: n, inFeatures: d.dim, outFeatures: d.ffnDim)
                GEMM.linearBackwardWeight(dWeight: grads.up.data, dOut: g.dUp.data, input: a.normed.data,
                                          rows: n, inFeatures: d.dim, outFeatures: d.ffnDim)
            }
        }
        // hn = RMSNorm(middle); the residual path already carries dOut into dMiddle
        RMSNorm.backward(dInput: dRes, dWeight: grads?.ffnNorm.data, dOut: g.dNormed.data, input: s.middle.data,
                         weight: w.ffnNorm.data, rstd: s.ffnRstd.data, rows: n, dim: d.dim)
        // middle = x + att Woᵀ: dAtt = dMiddle Wo
        let oFolded = frozenBackwardInput(l, .o, dInput: g.dAttention.data, dOut: dRes, rows: n, accumulate: false)
        deltasBackward(l, .o, dInput: g.dAttention.data, dOut: dRes, input: s.attention.data, rows: n, folded: oFolded)
        if let grads {
            GEMM.linearBackwardWeight(dWeight: grads.o.data, dOut: dRes, input: s.attention.data, rows: n,
                                      inFeatures: d.qDim, outFeatures: d.dim)
        }
        // att = attention(q, k, v)
        Attention.backward(dQ: g.dQ.data, dK: g.dK.data, dV: g.dV.data, dOut: g.dAttention.data,
                           out: s.attention.data, logSumExp: s.logSumExp.data, q: s.q.data, k: s.k.data,
                           v: s.v.data, lengths: layout.lengths, starts: layout.starts, batch: layout.batch,
                           seqLen: layout.seqLen, heads: d.heads, kvHeads: d.kvHeads, headDim: d.headDim)
        RoPE.backward(dx: g.dQ.data, positions: positions, rows: n, heads: d.heads, headDim: d.headDim, table: rope)
        RoPE.backward(dx: g.dK.data, positions: positions, rows: n, heads: d.kvHeads, headDim: d.headDim, table: rope)
        // q, k, v = xn Wᵀ: dXn = dQ Wq + dK Wk + dV Wv
        let qkv: [(Projection, Tensor)] = [(.q, g.dQ), (.k, g.dK), (.v, g.dV)]
        var qkvFolded = [false, false, false]
        if needInputGradient {
            for (i, (p, dOut)) in qkv.enumerated() {
                qkvFolded[i] = frozenBackwardInput(l, p, dInput: g.dNormed.data, dOut: dOut.data, rows: n,
                                                   accumulate: i > 0)
            }
        } else {
            // dNormed is a sink here: a delta's term through W (DoRA's) would only add to it, so it is left out
            qkvFolded = qkv.map { p, _ in deltas[l][p]?.first?.frozenGradientFactor != nil }
        }
        if grads != nil || hasDeltas(l, [.q, .k, .v]) {
            // xn = RMSNorm(x), rebuilt
            RMSNorm.forward(out: a.normed.data, rstd: s.attentionRstd.data, input: s.input.data,
                            weight: w.attentionNorm.data, rows: n, dim: d.dim, eps: d.normEps)
            for (i, (p, dOut)) in qkv.enumerated() {
                // without needInputGradient dNormed is a sink: what the adapters add to it is not used
                deltasBackward(l, p, dInput: g.dNormed.data, dOut: dOut.data, input: a.normed.data, rows: n,
                               folded: qkvFolded[i])
                if let grads {
                    let f = p.features(d)
                    GEMM.linearBackwardWeight(dWeight: grads.projection(p).data, dOut: dOut.data,
                                              input: a.normed.data, rows: n,
                                              inFeatures: f.inFeatures, outFeatures: f.outFeatures)
                }
            }
        }
        // xn = RMSNorm(x); dX = dMiddle (residual) + RMSNorm backward
        if needInputGradient {
            RMSNorm.backward(dInput: dRes, dWeight: grads?.attentionNorm.data, dOut: g.dNormed.data,
                             input: s.input.data, weight: w.attentionNorm.data, rstd: s.attentionRstd.data,
                             rows: n, dim: d.dim)
        }
    }
}
