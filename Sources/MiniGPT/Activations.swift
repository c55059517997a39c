import Tensors

/// What one block's forward keeps for its backward. Shapes for N rows (the capacity of the `Activations`).
///
/// Only what is expensive to recompute is kept: the outputs of the projections and of attention. The normed
/// inputs of the projections (one RMSNorm away from `input` and `middle`) and silu(gate)·up (one elementwise pass
/// away from `gate` and `up`) are rebuilt in the backward when an adapter or a weight gradient needs them.
/// Attention keeps one log-sum-exp per query and head instead of its (B, H, T, T) probabilities.
final class LayerActivations {
    /// (N, D) the residual stream entering the block; the scratch block is pointed at each block's input in turn
    var input: Tensor
    let attentionRstd: Tensor   // (N)
    let q: Tensor               // (N, H·hd) after RoPE
    let k: Tensor               // (N, KVH·hd) after RoPE
    let v: Tensor               // (N, KVH·hd)
    let logSumExp: Tensor       // (N, H) softmax denominators of attention, for its backward
    let attention: Tensor       // (N, H·hd) attention output, input of o
    let middle: Tensor          // (N, D) residual after attention
    let ffnRstd: Tensor         // (N)
    let gate: Tensor            // (N, F)
    let up: Tensor              // (N, F)

    init(_ d: ModelDimensions, rows n: Int, input: Tensor? = nil) {
        self.input = input ?? Tensor(shape: [n, d.dim])
        attentionRstd = Tensor(shape: [n])
        q = Tensor(shape: [n, d.qDim]); k = Tensor(shape: [n, d.kvDim]); v = Tensor(shape: [n, d.kvDim])
        logSumExp = Tensor(shape: [n, d.heads])
        attention = Tensor(shape: [n, d.qDim])
        middle = Tensor(shape: [n, d.dim])
        ffnRstd = Tensor(shape: [n])
        gate = Tensor(shape: [n, d.ffnDim]); up = Tensor(shape: [n, d.ffnDim])
    }
}

/// Gradient scratch, shared by all blocks (the backward runs one block at a time). Shapes for N rows.
final class GradientBuffers {
    let dResidual: Tensor         // (N, D) dL/d(residual stream) at the current block boundary
    let dNormed: Tensor           // (N, D) dL/d(an RMSNorm's output)
    let dQ: Tensor, dK: Tensor, dV: Tensor, dAttention: Tensor
    let dGate: Tensor, dUp: Tensor, dHidden: Tensor

    init(_ d: ModelDimensions, rows n: Int) {
        dResidual = Tensor(shape: [n, d.dim]); dNormed = Tensor(shape: [n, d.dim])
        dQ = Tensor(shape: [n, d.qDim]); dK = Tensor(shape: [n, d.kvDim]); dV = Tensor(shape: [n, d.kvDim])
        dAttention = Tensor(shape: [n, d.qDim])
        dGate = Tensor(shape: [n, d.ffnDim]); dUp = Tensor(shape: [n, d.ffnDim]); dHidden = Tensor(shape: [n, d.ffnDim])
    }
}

/// Every buffer of a step, allocated for `capacity` rows and reused by every batch that fits.
///
/// Blocks from `storedFrom` up keep their activations for the backward, one `LayerActivations` each; the blocks
/// below (nothing to train there) and every block of a forward without backward run in one shared `scratch`,
/// whose output overwrites its own input. With `recomputes` (gradient checkpointing) the blocks from `storedFrom`
/// up keep only their input, `checkpoints`, and also run in the scratch; the backward runs each block's forward
/// again from its checkpoint. Gradient buffers exist only once a backward has run. Each batch uses the first
/// `rows` rows of every buffer (`prepare`): packed batches differ in rows from step to step.
final class Activations {
    let capacity: Int
    /// Rows of the current batch.
    private(set) var rows = 0
    let storedFrom: Int
    /// Whether blocks from `storedFrom` up keep only their input (`checkpoints`) instead of `stored`.
    let recomputes: Bool
    let stored: [LayerActivations]    // blocks storedFrom..<L, without `recomputes`
    let checkpoints: [Tensor]         // (N, D) inputs of blocks storedFrom..<L, with `recomputes`
    /// Any block whose activations are not kept (allocated on first use: a run that keeps every block has none).
    /// (With `recomputes` and no block below `storedFrom` it starts at a checkpoint: its own input would go unused.)
    private lazy var scratch = LayerActivations(dims, rows: capacity,
                                                input: recomputes && storedFrom == 0 ? checkpoints[0] : scratchInput)
    /// The scratch block's own input, which blocks below `storedFrom` overwrite with their output.
    private lazy var scratchInput = Tensor(shape: [capacity, dims.dim])
    let output: Tensor                // (N, D) the last block's output, input of the final norm
    private(set) var positions: [Int32] = []  // (rows) position of each row inside its sequence
    let normed: Tensor                // (N, D) an RMSNorm's output, input of the projections
    let hidden: Tensor                // (N, F) silu(gate)·up, input of down
    let finalNormed: Tensor           // (N, D)
    let finalRstd: Tensor             // (N)
    /// LM head output, a chunk of `chunkRows` rows at a time (grown when a batch needs larger chunks).
    private(set) var logitChunk: Tensor
    private(set) var chunkRows = 0
    private var gradientBuffers: GradientBuffers?
    private let dims: ModelDimensions

    init(_ d: ModelDimensions, capacity n: Int, storedFrom: Int, recomputes: Bool = false) {
        capacity = n
        self.storedFrom = storedFrom
        self.recomputes = recomputes
        self.dims = d
        stored = recomputes ? [] : (storedFrom..<d.layers).map { _ in LayerActivations(d, rows: n) }
        checkpoints = recomputes ? (storedFrom..<d.layers).map { _ in Tensor(shape: [n, d.dim]) } : []
        output = Tensor(shape: [n, d.dim])
        normed = Tensor(shape: [n, d.dim])
        hidden = Tensor(shape: [n, d.ffnDim])
        finalNormed = Tensor(shape: [n, d.dim]); finalRstd = Tensor(shape: [n])
        logitChunk = Tensor(shape: [Self.chunkRows(rows: n, vocab: d.vocab), d.vocab])
    }

    /// The LM head over a 32k vocabulary is the largest activation: at most 128 MB of logits at a time, in equal
    /// chunks of a multiple of 16 rows. Each chunk packs and streams the whole head matrix twice (forward and dX),
    /// so fewer, larger chunks save memory traffic; 1024 rows of a 32k vocabulary are one chunk.
    static func chunkRows(rows n: Int, vocab: Int) -> Int {
        let budget = 32 << 20
        let chunks = max(1, (n * vocab + budget - 1) / budget)
        return min(n, max(16, ((n + chunks - 1) / chunks + 15) / 16 * 16))
    }

    /// Sets up the buffers for `batch` (at most `capacity` rows): its row count, positions and logit chunks.
    func prepare(for batch: TokenBatch) {
        precondition(batch.rows <= capacity, "a batch of \(batch.rows) rows in buffers of \(capacity)")
        rows = batch.rows
        positions = batch.positions
        chunkRows = Self.chunkRows(rows: rows, vocab: dims.vocab)
        if logitChunk.shape[0] < chunkRows { logitChunk = Tensor(shape: [chunkRows, dims.vocab]) }
    }

    /// The activations of block `layer`: its own when kept, the shared scratch otherwise (with `recomputes`, the
    /// scratch pointed at the block's checkpointed input).
    func layer(_ layer: Int) -> LayerActivations {
        if layer >= storedFrom && !recomputes { return stored[layer - storedFrom] }
        let s = scratch
        s.input = blockInput(layer)
        return s
    }

    /// Where block `layer` reads its input; block 0's is where the embedding goes.
    func blockInput(_ layer: Int) -> Tensor {
        if layer < storedFrom { return scratchInput }
        return recomputes ? checkpoints[layer - storedFrom] : stored[layer - storedFrom].input
    }

    /// Where block `layer`'s output goes: the next block's input, or `output` after the last block.
    func blockOutput(_ layer: Int) -> Tensor { layer + 1 < dims.layers ? blockInput(layer + 1) : output }

    /// The gradient scratch, allocated on the first backward.
    var gradients: GradientBuffers {
        if let g = gradientBuffers { return g }
        let g = GradientBuffers(dims, rows: capacity)
        gradientBuffers = g
        return g
    }
}
