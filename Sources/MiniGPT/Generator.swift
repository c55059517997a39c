import Foundation
import Tensors

/// Text generation with a key/value cache: each new token costs one pass over the weights, not the whole prefix.
///
/// `append` runs a chunk of new tokens (the whole prompt at once, then one token at a time) through the blocks,
/// attending to everything cached so far, and returns the logits of the chunk's last token.
public final class Generator {
    public let model: LlamaModel
    public let capacity: Int
    private let keys: [Tensor]      // per block (capacity, KVH·hd), after RoPE
    private let values: [Tensor]    // per block (capacity, KVH·hd)
    public private(set) var length = 0
    /// The ids whose keys and values the cache holds, in order (`length` of them).
    public private(set) var cachedTokens: [Int32] = []
    /// How many tokens of the last `generate(reusingCache: true)`'s prompt came from the cache.
    public private(set) var reusedTokens = 0

    // Scratch for a chunk of up to `chunk` rows, grown when a longer chunk comes.
    private var chunk = 0
    private var x = Tensor(shape: [0]), normed = Tensor(shape: [0]), q = Tensor(shape: [0])
    private var k = Tensor(shape: [0]), v = Tensor(shape: [0]), attention = Tensor(shape: [0])
    private var gate = Tensor(shape: [0]), up = Tensor(shape: [0]), hidden = Tensor(shape: [0])
    private var rstd = Tensor(shape: [0])
    private let scores: Tensor      // (H, capacity)
    public let logits: Tensor       // (V) of the last appended token

    public init(model: LlamaModel, capacity: Int) {
        let d = model.dims
        self.model = model
        self.capacity = capacity
        keys = (0..<d.layers).map { _ in Tensor(shape: [capacity, d.kvDim]) }
        values = (0..<d.layers).map { _ in Tensor(shape: [capacity, d.kvDim]) }
        scores = Tensor(shape: [d.heads, capacity])
        model.ensurePositions(capacity)
        logits = Tensor(shape: [d.vocab])
    }

    /// Forgets the cached prefix (the adapters stay as they are).
    public func reset() { truncate(to: 0) }

    /// Keeps the first `count` cached tokens and forgets the rest.
    public func truncate(to count: Int) {
        length = min(length, max(0, count))
        cachedTokens.removeLast(cachedTokens.count - length)
    }

    private func reserve(rows: Int) {
        if rows <= chunk { return }
        let d = model.dims
        chunk = rows
        x = Tensor(shape: [rows, d.dim]); normed = Tensor(shape: [rows, d.dim]); rstd = Tensor(shape: [rows])
        q = Tensor(shape: [rows, d.qDim]); k = Tensor(shape: [rows, d.kvDim]); v = Tensor(shape: [rows, d.kvDim])
        attention = Tensor(shape: [rows, d.qDim])
        gate = Tensor(shape: [rows, d.ffnDim]); up = Tensor(shape: [rows, d.ffnDim]); hidden = Tensor(shape: [rows, d.ffnDim])
    }

    /// Appends `tokens` to the sequence and returns the logits that predict the token after them.
    @discardableResult
    public func append(_ tokens: [Int32]) throws -> Tensor {
        let d = model.dims, w = model.weights, n = tokens.count
        guard n > 0 else { throw LoRAKitError("nothing to generate from: the prompt has no tokens") }
        guard length + n <= capacity else {
            throw LoRAKitError("sequence of \(length + n) tokens exceeds the generator's capacity of \(capacity)")
        }
        for (i, id) in tokens.enumerated() where id < 0 || Int(id) >= d.vocab {
            throw LoRAKitError("token id \(id) at position \(i) is outside the vocabulary (0..<\(d.vocab))")
        }
        reserve(rows: n)
        let start = length
        let positions = (0..<n).map { Int32(start + $0) }
        tokens.withUnsafeBufferPointer { ids in
            Embedding.forward(out: x.data, table: w.embedding.data, ids: ids.baseAddress!, rows: n, dim: d.dim)
        }
        positions.withUnsafeBufferPointer { pos in
            for l in 0..<d.layers { block(l, rows: n, start: start, positions: pos.baseAddress!) }
        }
        // Only the last row's logits are needed.
        let last = x.data + (n - 1) * d.dim
        RMSNorm.forward(out: normed.data, rstd: rstd.data, input: last, weight: w.finalNorm.data, rows: 1,
                        dim: d.dim, eps: d.normEps)
        GEMM.linear(out: logits.data, input: normed.data, weight: w.lmHead.data, rows: 1, inFeatures: d.dim,
                    outFeatures: d.vocab)
        length += n
        cachedTokens += tokens
        return logits
    }

    private func project(_ l: Int, _ p: Projection, out: Tensor, input: Tensor, rows: Int, accumulate: Bool = false) {
        let f = p.features(model.dims)
        model.weights.layers[l].frozen(p).linear(out: out.data, input: input.data, rows: rows,
                                                 inFeatures: f.inFeatures, outFeatures: f.outFeatures,
                                                 accumulate: accumulate)
        addDeltas(l, p, out: out, input: input, rows: rows, outIsBase: !accumulate)
    }

    /// The projections `a`, `b` (and `c`) of the block's normed input, which they all read: for one token and F32
    /// weights in one parallel region over all their rows (`GEMM.linearOneRow`), otherwise one product each.
    private func projectShared(_ l: Int, input: Tensor, rows: Int, _ a: (Projection, Tensor), _ b: (Projection, Tensor),
                               _ c: (Projection, Tensor)? = nil) {
        let pa = oneRowProduct(l, a), pb = oneRowProduct(l, b), pc = c.flatMap { oneRowProduct(l, $0) }
        guard rows == 1, let pa, let pb, (c == nil) == (pc == nil) else {
            project(l, a.0, out: a.1, input: input, rows: rows)
            project(l, b.0, out: b.1, input: input, rows: rows)
            if let c { project(l, c.0, out: c.1, input: input, rows: rows) }
            return
        }
        GEMM.linearOneRow(input: input.data, inFeatures: a.0.features(model.dims).inFeatures, pa, pb, pc)
        addDeltas(l, a.0, out: a.1, input: input, rows: rows, outIsBase: true)
        addDeltas(l, b.0, out: b.1, input: input, rows: rows, outIsBase: true)
        if let c { addDeltas(l, c.0, out: c.1, input: input, rows: rows, outIsBase: true) }
    }

    /// Projection `p` of block `l` writing `out`, when its weight is F32.
    private func oneRowProduct(_ l: Int, _ projection: (Projection, Tensor)) -> GEMM.OneRowProduct? {
        guard case .f32(let weight) = model.weights.layers[l].frozen(projection.0) else { return nil }
        return GEMM.OneRowProduct(out: projection.1.data, weight: weight.data,
                                  rows: projection.0.features(model.dims).outFeatures)
    }

    private func addDeltas(_ l: Int, _ p: Projection, out: Tensor, input: Tensor, rows: Int, outIsBase: Bool) {
        model.applyDeltas(l, p, out: out.data, input: input.data, rows: rows, training: false, outIsBase: outIsBase)
    }

    private func block(_ l: Int, rows n: Int, start: Int, positions: UnsafePointer<Int32>) {
        let d = model.dims, w = model.weights.layers[l]
        RMSNorm.forward(out: normed.data, rstd: rstd.data, input: x.data, weight: w.attentionNorm.data, rows: n,
                        dim: d.dim, eps: d.normEps)
        projectShared(l, input: normed, rows: n, (.q, q), (.k, k), (.v, v))
        RoPE.forward(x: q.data, positions: positions, rows: n, heads: d.heads, headDim: d.headDim, table: model.rope)
        RoPE.forward(x: k.data, positions: positions, rows: n, heads: d.kvHeads, headDim: d.headDim, table: model.rope)
        (keys[l].data + start * d.kvDim).update(from: k.data, count: n * d.kvDim)
        (values[l].data + start * d.kvDim).update(from: v.data, count: n * d.kvDim)
        cachedAttention(l, rows: n, start: start)
        project(l, .o, out: x, input: attention, rows: n, accumulate: true)   // x += att Woᵀ
        RMSNorm.forward(out: normed.data, rstd: rstd.data, input: x.data, weight: w.ffnNorm.data, rows: n,
                        dim: d.dim, eps: d.normEps)
        projectShared(l, input: normed, rows: n, (.gate, gate), (.up, up))
        SwiGLU.forward(out: hidden.data, gate: gate.data, up: up.data, count: n * d.ffnDim)
        project(l, .down, out: x, input: hidden, rows: n, accumulate: true)   // x += hidden Wdᵀ
    }

    /// Attention of the chunk's queries over the cache: row i (position start+i) sees keys 0...start+i.
    private func cachedAttention(_ l: Int, rows n: Int, start: Int) {
        let d = model.dims
        Attention.cachedForward(out: attention.data, q: q.data, keys: keys[l].data, values: values[l].data,
                                scores: scores.data, scoresStride: capacity, rows: n, start: start,
                                heads: d.heads, kvHeads: d.kvHeads, headDim: d.headDim)
    }
}

/// Picks the next token from logits: greedy at temperature 0, otherwise temperature and nucleus (top-p) sampling.
public struct Sampler {
    public var temperature: Float
    public var topP: Float
    public var rng: RandomGenerator
    private var order: [Int] = []
    private var probabilities: [Float] = []

    public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.rng = RandomGenerator(seed: seed)
    }

    public mutating func next(_ logits: Tensor) -> Int32 {
        let vocab = logits.count
        if temperature <= 0 {
            var best = 0
            for i in 1..<vocab where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        if probabilities.count != vocab { probabilities = [Float](repeating: 0, count: vocab); order = Array(0..<vocab) }
        var maxLogit = -Float.infinity
        for i in 0..<vocab { maxLogit = max(maxLogit, logits[i]) }
        var total: Float = 0
        for i in 0..<vocab {
            let p = expf((logits[i] - maxLogit) / temperature)
            probabilities[i] = p
            total += p
        }
        for i in 0..<vocab { probabilities[i] /= total }
        var candidates = vocab
        if topP < 1 {
            for i in 0..<vocab { order[i] = i }
            order.sort { probabilities[$0] > probabilities[$1] || (probabilities[$0] == probabilities[$1] && $0 < $1) }
            var cumulative: Float = 0
            candidates = 0
            while candidates < vocab {
                cumulative += probabilities[order[candidates]]
                candidates += 1
                if cumulative >= topP { break }
            }
            let r = rng.nextUniform() * cumulative
            var acc: Float = 0
            for c in 0..<candidates {
                acc += probabilities[order[c]]
                if r < acc { return Int32(order[c]) }
            }
            return Int32(order[candidates - 1])
        }
        let r = rng.nextUniform()
        var acc: Float = 0
        for i in 0..<vocab {
            acc += probabilities[i]
            if r < acc { return Int32(i) }
        }
        return Int32(vocab - 1)
    }
}

extension Generator {
    /// Generates up to `maxNewTokens` after `prompt`, stopping at `stop` (EOS); `onToken` sees each new token.
    ///
    /// With `reusingCache` the keys and values already cached for the longest common prefix of the cache and
    /// `prompt` are kept and only the rest of the prompt is run: a conversation's next turn costs its new tokens,
    /// not the whole conversation again (llama.cpp's and mlx-lm's prompt cache). The kept rows were computed in
    /// other chunks than a fresh run would use, so logits can differ from it in their last bits.
    public func generate(prompt: [Int32], maxNewTokens: Int, sampler: inout Sampler, stop: Int32?,
                         reusingCache: Bool = false, onToken: (Int32) -> Void = { _ in }) throws -> [Int32] {
        var kept = 0
        if reusingCache {
            while kept < min(cachedTokens.count, prompt.count - 1) && cachedTokens[kept] == prompt[kept] { kept += 1 }
        }
        truncate(to: kept)   // at least the prompt's last token runs again: its logits start the answer
        reusedTokens = kept
        var out: [Int32] = []
        var logits = try append(Array(prompt[kept...]))
        for i in 0..<maxNewTokens {
            let next = sampler.next(logits)
            out.append(next)
            onToken(next)
            // the last token is not run: nothing would read its logits
            if next == stop || i == maxNewTokens - 1 || length >= capacity { break }
            logits = try append([next])
        }
        return out
    }
}
