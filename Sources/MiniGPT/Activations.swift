import Tensors

/// What one block's forward keeps for its backward. Shapes for N = B·T rows.
final class LayerActivations {
    let input: Tensor          // (N, D) the residual stream entering the block
    let attentionNormed: Tensor // (N, D)
    let attentionRstd: Tensor   // (N)
    let q: Tensor              // (N, H·hd) after RoPE
    let k: Tensor              // (N, KVH·hd) after RoPE
    let v: Tensor              // (N, KVH·hd)
    let probs: Tensor          // (B, H, T, T)
    let attention: Tensor      // (N, H·hd) attention output, input of o
    let middle: Tensor         // (N, D) residual after attention
    let ffnNormed: Tensor      // (N, D)
    let ffnRstd: Tensor        // (N)
    let gate: Tensor           // (N, F)
    let up: Tensor             // (N, F)
    let hidden: Tensor         // (N, F) silu(gate)·up, input of down

    init(_ d: ModelDimensions, batch: Int, seqLen: Int, input: Tensor) {
        let n = batch * seqLen
        self.input = input
        attentionNormed = Tensor(shape: [n, d.dim]); attentionRstd = Tensor(shape: [n])
        q = Tensor(shape: [n, d.qDim]); k = Tensor(shape: [n, d.kvDim]); v = Tensor(shape: [n, d.kvDim])
        probs = Tensor(shape: [batch, d.heads, seqLen, seqLen])
        attention = Tensor(shape: [n, d.qDim])
        middle = Tensor(shape: [n, d.dim])
        ffnNormed = Tensor(shape: [n, d.dim]); ffnRstd = Tensor(shape: [n])
        gate = Tensor(shape: [n, d.ffnDim]); up = Tensor(shape: [n, d.ffnDim]); hidden = Tensor(shape: [n, d.ffnDim])
    }
}

/// Every buffer of one (B, T) shape, allocated once and reused by each step of that shape.
final class Activations {
    let batch: Int
    let seqLen: Int
    let rows: Int
    let residuals: [Tensor]       // L+1 tensors (N, D): block inputs, then the last block's output
    let layers: [LayerActivations]
    let positions: [Int32]        // (N) position of each row inside its sequence
    let finalNormed: Tensor       // (N, D)
    let finalRstd: Tensor         // (N)
    let logitChunk: Tensor        // (chunkRows, V) LM head output, a chunk of rows at a time
    let chunkRows: Int

    // Gradient scratch, shared by all blocks (the backward runs one block at a time).
    let dResidual: Tensor         // (N, D)
    let dNormed: Tensor           // (N, D)
    let dQ: Tensor, dK: Tensor, dV: Tensor, dAttention: Tensor
    let dGate: Tensor, dUp: Tensor, dHidden: Tensor
    let attentionScratch: Tensor

    init(_ d: ModelDimensions, batch: Int, seqLen: Int) {
        self.batch = batch
        self.seqLen = seqLen
        let n = batch * seqLen
        rows = n
        let residuals = (0...d.layers).map { _ in Tensor(shape: [n, d.dim]) }
        self.residuals = residuals
        layers = (0..<d.layers).map { LayerActivations(d, batch: batch, seqLen: seqLen, input: residuals[$0]) }
        positions = (0..<n).map { Int32($0 % seqLen) }
        finalNormed = Tensor(shape: [n, d.dim]); finalRstd = Tensor(shape: [n])
        // The LM head over a 32k vocabulary is the largest activation: keep at most ~32 MB of it at once.
        chunkRows = min(n, max(16, (8 << 20) / max(1, d.vocab)))
        logitChunk = Tensor(shape: [chunkRows, d.vocab])
        dResidual = Tensor(shape: [n, d.dim]); dNormed = Tensor(shape: [n, d.dim])
        dQ = Tensor(shape: [n, d.qDim]); dK = Tensor(shape: [n, d.kvDim]); dV = Tensor(shape: [n, d.kvDim])
        dAttention = Tensor(shape: [n, d.qDim])
        dGate = Tensor(shape: [n, d.ffnDim]); dUp = Tensor(shape: [n, d.ffnDim]); dHidden = Tensor(shape: [n, d.ffnDim])
        attentionScratch = Tensor(shape: [Attention.scratchCount(seqLen: seqLen)])
    }
}
