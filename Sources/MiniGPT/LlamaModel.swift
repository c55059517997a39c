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

    private var activations: Activations?

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

    private func buffers(batch: Int, seqLen: Int) -> Activations {
        if let a = activations, a.batch == batch, a.seqLen == seqLen { return a }
        activations = nil  // free the old shape before allocating the new one
        let a = Activations(dims, batch: batch, seqLen: seqLen)
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
            throw LoRAKitError("token id \(id) at position \(i % batch.seqLen) of sequence \(i / batch.seqLen) is outside the vocabulary (0..<\(dims.vocab))")
        }
        for (i, id) in batch.targets.enumerated() where Int(id) >= dims.vocab {
            throw LoRAKitError("target id \(id) at position \(i % batch.seqLen) is outside the vocabulary (0..<\(dims.vocab))")
        }
    }

    // MARK: forward

    private func applyDeltas(_ layer: Int, _ p: Projection, out: UnsafeMutablePointer<Float>,
                             input: UnsafePointer<Float>, rows: Int, training: Bool) {
        guard let list = deltas[layer][p] else { return }
        for d in list { d.forward(out: out, input: input, rows: rows, training: training) }
    }

    /// Runs the blocks and the final norm; leaves everything the backward needs in the activations.
    private func forwardBlocks(_ batch: TokenBatch, training: Bool) -> Activations {
        let a = buffers(batch: batch.batch, seqLen: batch.seqLen)
        let n = a.rows, d = dims
        batch.ids.withUnsafeBufferPointer { ids in
            Embedding.forward(out: a.residuals[0].data, table: weights.embedding.data, ids: ids.baseAddress!,
                              rows: n, dim: d.dim)
        }
        batch.lengths.withUnsafeBufferPointer { lengths in
            a.positions.withUnsafeBufferPointer { positions in
                for l in 0..<d.layers {
                    blockForward(l, a.layers[l], output: a.residuals[l + 1], lengths: lengths.baseAddress!,
                                 positions: positions.baseAddress!, batch: batch.batch, seqLen: batch.seqLen,
                                 training: training)
                }
            }
        }
        RMSNorm.forward(out: a.finalNormed.data, rstd: a.finalRstd.data, input: a.residuals[d.layers].data,
                        weight: weights.finalNorm.data, rows: n, dim: d.dim, eps: d.normEps)
        return a
    }

    private func blockForward(_ l: Int, _ s: LayerActivations, output: Tensor, lengths: UnsafePointer<Int32>,
                              positions: UnsafePointer<Int32>, batch: Int, seqLen: Int, training: Bool) {
        let w = weights.layers[l], d = dims, n = batch * seqLen
        // xn = RMSNorm(x)
        RMSNorm.forward(out: s.attentionNormed.data, rstd: s.attentionRstd.data, input: s.input.data,
                        weight: w.attentionNorm.data, rows: n, dim: d.dim, eps: d.normEps)
        // q, k, v = xn Wᵀ (+ adapters), then RoPE on q and k
        for (p, out) in [(Projection.q, s.q), (.k, s.k), (.v, s.v)] {
            let f = p.features(d)
            GEMM.linear(out: out.data, input: s.attentionNormed.data, weight: w.projection(p).data, rows: n,
                        inFeatures: f.inFeatures, outFeatures: f.outFeatures)
            applyDeltas(l, p, out: out.data, input: s.attentionNormed.data, rows: n, training: training)
        }
        RoPE.forward(x: s.q.data, positions: positions, rows: n, heads: d.heads, headDim: d.headDim, table: rope)
        RoPE.forward(x: s.k.data, positions: positions, rows: n, heads: d.kvHeads, headDim: d.headDim, table: rope)
        // att = softmax(q kᵀ / √hd + mask) v
        Attention.forward(out: s.attention.data, probs: s.probs.data, q: s.q.data, k: s.k.data, v: s.v.data,
                          lengths: lengths, batch: batch, seqLen: seqLen, heads: d.heads, kvHeads: d.kvHeads,
                          headDim: d.headDim)
        // middle = x + att Woᵀ (+ adapter)
        s.middle.copy(from: s.input)
        GEMM.linear(out: s.middle.data, input: s.attention.data, weight: w.o.data, rows: n,
                    inFeatures: d.qDim, outFeatures: d.dim, accumulate: true)
        applyDeltas(l, .o, out: s.middle.data, input: s.attention.data, rows: n, training: training)
        // hn = RMSNorm(middle); gate, up = hn Wᵀ; hidden = silu(gate)·up
        RMSNorm.forward(out: s.ffnNormed.data, rstd: s.ffnRstd.data, input: s.middle.data,
                        weight: w.ffnNorm.data, rows: n, dim: d.dim, eps: d.normEps)
        for (p, out) in [(Projection.gate, s.gate), (.up, s.up)] {
            GEMM.linear(out: out.data, input: s.ffnNormed.data, weight: w.projection(p).data, rows: n,
                        inFeatures: d.dim, outFeatures: d.ffnDim)
            applyDeltas(l, p, out: out.data, input: s.ffnNormed.data, rows: n, training: training)
        }
        SwiGLU.forward(out: s.hidden.data, gate: s.gate.data, up: s.up.data, count: n * d.ffnDim)
        // out = middle + hidden Wdᵀ (+ adapter)
        output.copy(from: s.middle)
        GEMM.linear(out: output.data, input: s.hidden.data, weight: w.down.data, rows: n,
                    inFeatures: d.ffnDim, outFeatures: d.dim, accumulate: true)
        applyDeltas(l, .down, out: output.data, input: s.hidden.data, rows: n, training: training)
    }

    /// Logits for every position of the batch, (B·T, V). Padded positions hold values that mean nothing.
    public func logits(_ batch: TokenBatch) throws -> Tensor {
        try validate(batch)
        let a = forwardBlocks(batch, training: false)
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
        let a = forwardBlocks(batch, training: training)
        let n = a.rows, d = dims
        let stop = backward ? lowestTrainedLayer : nil
        let grads = backward ? weightGradients : nil
        if stop != nil { a.dNormed.zero() }
        var sum = 0.0
        var count = 0
        batch.targets.withUnsafeBufferPointer { targets in
            var r0 = 0
            while r0 < n {
                let rows = min(a.chunkRows, n - r0)
                let chunkTargets = targets.baseAddress! + r0
                let counted = (0..<rows).reduce(0) { $0 + (chunkTargets[$1] >= 0 ? 1 : 0) }
                if counted > 0 {
                    count += counted
                    // logits = xn Wlmᵀ; CE; dlogits in place
                    GEMM.linear(out: a.logitChunk.data, input: a.finalNormed.data + r0 * d.dim,
                                weight: weights.lmHead.data, rows: rows, inFeatures: d.dim, outFeatures: d.vocab)
                    sum += CrossEntropy.forwardBackward(logits: a.logitChunk.data, targets: chunkTargets, rows: rows,
                                                        vocab: d.vocab, gradScale: gradScale,
                                                        computeGradient: stop != nil)
                    if stop != nil {
                        GEMM.linearBackwardInput(dInput: a.dNormed.data + r0 * d.dim, dOut: a.logitChunk.data,
                                                 weight: weights.lmHead.data, rows: rows, inFeatures: d.dim,
                                                 outFeatures: d.vocab, accumulate: false)
                        if let g = grads {
                            GEMM.linearBackwardWeight(dWeight: g.lmHead.data, dOut: a.logitChunk.data,
                                                      input: a.finalNormed.data + r0 * d.dim, rows: rows,
                                                      inFeatures: d.dim, outFeatures: d.vocab)
                        }
                    }
                }
                r0 += rows
            }
        }
        if let stop {
            a.dResidual.zero()
            RMSNorm.backward(dInput: a.dResidual.data, dWeight: grads?.finalNorm.data, dOut: a.dNormed.data,
                             input: a.residuals[d.layers].data, weight: weights.finalNorm.data,
                             rstd: a.finalRstd.data, rows: n, dim: d.dim)
            batch.lengths.withUnsafeBufferPointer { lengths in
                a.positions.withUnsafeBufferPointer { positions in
                    for l in stride(from: d.layers - 1, through: stop, by: -1) {
                        blockBackward(l, a, lengths: lengths.baseAddress!, positions: positions.baseAddress!,
                                      batch: batch.batch, seqLen: batch.seqLen, grads: grads?.layers[l])
                    }
                }
            }
            if let g = grads {
                batch.ids.withUnsafeBufferPointer { ids in
                    Embedding.backward(dTable: g.embedding.data, dOut: a.dResidual.data, ids: ids.baseAddress!,
                                       rows: n, dim: d.dim)
                }
            }
        }
        return (sum, count)
    }

    private func deltasBackward(_ layer: Int, _ p: Projection, dInput: UnsafeMutablePointer<Float>,
                                dOut: UnsafePointer<Float>, input: UnsafePointer<Float>, rows: Int) {
        guard let list = deltas[layer][p] else { return }
        for d in list { d.backward(dInput: dInput, dOut: dOut, input: input, rows: rows) }
    }

    /// Turns dL/d(block output), held in `dResidual`, into dL/d(block input), in place.
    private func blockBackward(_ l: Int, _ a: Activations, lengths: UnsafePointer<Int32>,
                               positions: UnsafePointer<Int32>, batch: Int, seqLen: Int, grads: LayerWeights?) {
        let w = weights.layers[l], s = a.layers[l], d = dims, n = a.rows
        let dRes = a.dResidual.data
        // out = middle + hidden Wdᵀ: dHidden = dOut Wd
        GEMM.linearBackwardInput(dInput: a.dHidden.data, dOut: dRes, weight: w.down.data, rows: n,
                                 inFeatures: d.ffnDim, outFeatures: d.dim, accumulate: false)
        deltasBackward(l, .down, dInput: a.dHidden.data, dOut: dRes, input: s.hidden.data, rows: n)
        if let g = grads {
            GEMM.linearBackwardWeight(dWeight: g.down.data, dOut: dRes, input: s.hidden.data, rows: n,
                                      inFeatures: d.ffnDim, outFeatures: d.dim)
        }
        // hidden = silu(gate)·up
        SwiGLU.backward(dGate: a.dGate.data, dUp: a.dUp.data, dOut: a.dHidden.data, gate: s.gate.data,
                        up: s.up.data, count: n * d.ffnDim)
        // gate, up = hn Wᵀ: dHn = dGate Wg + dUp Wu
        GEMM.linearBackwardInput(dInput: a.dNormed.data, dOut: a.dGate.data, weight: w.gate.data, rows: n,
                                 inFeatures: d.dim, outFeatures: d.ffnDim, accumulate: false)
        GEMM.linearBackwardInput(dInput: a.dNormed.data, dOut: a.dUp.data, weight: w.up.data, rows: n,
                                 inFeatures: d.dim, outFeatures: d.ffnDim, accumulate: true)
        deltasBackward(l, .gate, dInput: a.dNormed.data, dOut: a.dGate.data, input: s.ffnNormed.data, rows: n)
        deltasBackward(l, .up, dInput: a.dNormed.data, dOut: a.dUp.data, input: s.ffnNormed.data, rows: n)
        if let g = grads {
            GEMM.linearBackwardWeight(dWeight: g.gate.data, dOut: a.dGate.data, input: s.ffnNormed.data, rows: n,
                                      inFeatures: d.dim, outFeatures: d.ffnDim)
            GEMM.linearBackwardWeight(dWeight: g.up.data, dOut: a.dUp.data, input: s.ffnNormed.data, rows: n,
                                      inFeatures: d.dim, outFeatures: d.ffnDim)
        }
        // hn = RMSNorm(middle); the residual path already carries dOut into dMiddle
        RMSNorm.backward(dInput: dRes, dWeight: grads?.ffnNorm.data, dOut: a.dNormed.data, input: s.middle.data,
                         weight: w.ffnNorm.data, rstd: s.ffnRstd.data, rows: n, dim: d.dim)
        // middle = x + att Woᵀ: dAtt = dMiddle Wo
        GEMM.linearBackwardInput(dInput: a.dAttention.data, dOut: dRes, weight: w.o.data, rows: n,
                                 inFeatures: d.qDim, outFeatures: d.dim, accumulate: false)
        deltasBackward(l, .o, dInput: a.dAttention.data, dOut: dRes, input: s.attention.data, rows: n)
        if let g = grads {
            GEMM.linearBackwardWeight(dWeight: g.o.data, dOut: dRes, input: s.attention.data, rows: n,
                                      inFeatures: d.qDim, outFeatures: d.dim)
        }
        // att = attention(q, k, v)
        Attention.backward(dQ: a.dQ.data, dK: a.dK.data, dV: a.dV.data, dOut: a.dAttention.data,
                           probs: s.probs.data, q: s.q.data, k: s.k.data, v: s.v.data, lengths: lengths,
                           batch: batch, seqLen: seqLen, heads: d.heads, kvHeads: d.kvHeads, headDim: d.headDim,
                           scratch: a.attentionScratch.data)
        RoPE.backward(dx: a.dQ.data, positions: positions, rows: n, heads: d.heads, headDim: d.headDim, table: rope)
        RoPE.backward(dx: a.dK.data, positions: positions, rows: n, heads: d.kvHeads, headDim: d.headDim, table: rope)
        // q, k, v = xn Wᵀ: dXn = dQ Wq + dK Wk + dV Wv
        var first = true
        for (p, dOut) in [(Projection.q, a.dQ), (.k, a.dK), (.v, a.dV)] {
            let f = p.features(d)
            GEMM.linearBackwardInput(dInput: a.dNormed.data, dOut: dOut.data, weight: w.projection(p).data, rows: n,
                                     inFeatures: f.inFeatures, outFeatures: f.outFeatures, accumulate: !first)
            first = false
            deltasBackward(l, p, dInput: a.dNormed.data, dOut: dOut.data, input: s.attentionNormed.data, rows: n)
            if let g = grads {
                GEMM.linearBackwardWeight(dWeight: g.projection(p).data, dOut: dOut.data,
                                          input: s.attentionNormed.data, rows: n,
                                          inFeatures: f.inFeatures, outFeatures: f.outFeatures)
            }
        }
        // xn = RMSNorm(x); dX = dMiddle (residual) + RMSNorm backward
        RMSNorm.backward(dInput: dRes, dWeight: grads?.attentionNorm.data, dOut: a.dNormed.data, input: s.input.data,
                         weight: w.attentionNorm.data, rstd: s.attentionRstd.data, rows: n, dim: d.dim)
    }
}
