import Foundation
import XCTest
@testable import Tensors

/// The tiled attention (log-sum-exp saved, probabilities recomputed) against the attention that keeps its
/// probabilities, which `AttentionTests` checks against a triple loop.
final class AttentionTiledTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    struct Problem {
        let batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int
        let lengths: [Int32]
        let q: Tensor, k: Tensor, v: Tensor, dOut: Tensor

        init(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, lengths: [Int32], seed: UInt64) {
            self.batch = batch; self.seqLen = seqLen; self.heads = heads; self.kvHeads = kvHeads
            self.headDim = headDim; self.lengths = lengths
            q = randomTensor([batch, seqLen, heads, headDim], seed: seed, scale: 1.5)
            k = randomTensor([batch, seqLen, kvHeads, headDim], seed: seed + 1, scale: 1.5)
            v = randomTensor([batch, seqLen, kvHeads, headDim], seed: seed + 2)
            dOut = randomTensor([batch, seqLen, heads, headDim], seed: seed + 3)
        }

        /// out, lse, dQ, dK, dV of the tiled kernels (outputs pre-filled with NaN).
        func tiled() -> [Tensor] {
            let out = nanTensor(q.shape), lse = nanTensor([batch * seqLen, heads])
            let dQ = nanTensor(q.shape), dK = nanTensor(k.shape), dV = nanTensor(v.shape)
            lengths.withUnsafeBufferPointer { lengths in
                Attention.forward(out: out.data, logSumExp: lse.data, q: q.data, k: k.data, v: v.data,
                                  lengths: lengths.baseAddress!, batch: batch, seqLen: seqLen, heads: heads,
                                  kvHeads: kvHeads, headDim: headDim)
                Attention.backward(dQ: dQ.data, dK: dK.data, dV: dV.data, dOut: dOut.data, out: out.data,
                                   logSumExp: lse.data, q: q.data, k: k.data, v: v.data,
                                   lengths: lengths.baseAddress!, batch: batch, seqLen: seqLen, heads: heads,
                                   kvHeads: kvHeads, headDim: headDim)
            }
            return [out, lse, dQ, dK, dV]
        }

        /// out, probs, dQ, dK, dV of the attention that keeps its (B, H, T, T) probabilities.
        func reference() -> [Tensor] {
            let out = Tensor(shape: q.shape), probs = Tensor(shape: [batch, heads, seqLen, seqLen])
            let dQ = Tensor(shape: q.shape), dK = Tensor(shape: k.shape), dV = Tensor(shape: v.shape)
            let scratch = Tensor(shape: [Attention.scratchCount(seqLen: seqLen)])
            lengths.withUnsafeBufferPointer { lengths in
                Attention.forward(out: out.data, probs: probs.data, q: q.data, k: k.data, v: v.data,
                                  lengths: lengths.baseAddress!, batch: batch, seqLen: seqLen, heads: heads,
                                  kvHeads: kvHeads, headDim: headDim)
                Attention.backward(dQ: dQ.data, dK: dK.data, dV: dV.data, dOut: dOut.data, probs: probs.data,
                                   q: q.data, k: k.data, v: v.data, lengths: lengths.baseAddress!, batch: batch,
                                   seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim,
                                   scratch: scratch.data)
            }
            return [out, probs, dQ, dK, dV]
        }
    }

    func check(_ p: Problem, label: String) {
        let got = p.tiled(), want = p.reference()
        checkClose("\(label) out", got[0], want[0], tolerance: 2e-6)
        checkClose("\(label) dQ", got[2], want[2], tolerance: 2e-5)
        checkClose("\(label) dK", got[3], want[3], tolerance: 2e-5)
        checkClose("\(label) dV", got[4], want[4], tolerance: 2e-5)
        // lse is log Σ_j exp(s_j) over the allowed keys; exp(s_j − lse) are the kept probabilities
        let scale = 1 / Float(p.headDim).squareRoot(), group = p.heads / p.kvHeads
        for b in 0..<p.batch {
            for h in 0..<p.heads {
                for t in 0..<p.seqLen {
                    let allowed = min(t + 1, Int(p.lengths[b]))
                    let lse = got[1][(b * p.seqLen + t) * p.heads + h]
                    if allowed == 0 { XCTAssertEqual(lse, -.infinity); continue }
                    for j in 0..<allowed {
                        var s: Float = 0
                        for c in 0..<p.headDim {
                            s += p.q[((b * p.seqLen + t) * p.heads + h) * p.headDim + c]
                                * p.k[((b * p.seqLen + j) * p.kvHeads + h / group) * p.headDim + c]
                        }
                        let want = want[1][((b * p.heads + h) * p.seqLen + t) * p.seqLen + j]
                        XCTAssertEqual(exp(s * scale - lse), want, accuracy: 1e-5)
                    }
                }
            }
        }
    }

    func testMatchesTheAttentionThatKeepsProbabilities() {
        // several row blocks, grouped-query heads, padding inside a block, and an empty sequence
        check(Problem(batch: 3, seqLen: 150, heads: 4, kvHeads: 2, headDim: 8, lengths: [150, 70, 0], seed: 1),
              label: "gqa")
        check(Problem(batch: 1, seqLen: 5, heads: 2, kvHeads: 2, headDim: 4, lengths: [5], seed: 2), label: "tiny")
        check(Problem(batch: 2, seqLen: 64, heads: 3, kvHeads: 1, headDim: 16, lengths: [1, 64], seed: 3),
              label: "mqa")
    }

    /// A packed batch (each example owns exactly its tokens' rows, `starts` given) gives the padded batch's
    /// results on every real row, when nothing flows back from padding (as in the model, where padding carries
    /// no loss); it never touches a row past the last example's.
    func testPackedRowsGiveThePaddedResults() {
        let lengths: [Int32] = [150, 70, 0, 1, 129]
        let padded = Problem(batch: lengths.count, seqLen: 150, heads: 4, kvHeads: 2, headDim: 8, lengths: lengths, seed: 6)
        let qw = padded.heads * padded.headDim, kvw = padded.kvHeads * padded.headDim
        for (b, length) in lengths.enumerated() {
            for t in Int(length)..<padded.seqLen { (padded.dOut.data + (b * padded.seqLen + t) * qw).update(repeating: 0, count: qw) }
        }
        let want = padded.tiled()
        var starts = [0]
        for length in lengths { starts.append(starts[starts.count - 1] + Int(length)) }
        let rows = starts[lengths.count]
        // the real rows, back to back, and one row past them that must stay untouched
        func pack(_ t: Tensor, width: Int) -> Tensor {
            let packed = nanTensor([rows + 1, width])
            for (b, length) in lengths.enumerated() {
                (packed.data + starts[b] * width).update(from: t.data + b * padded.seqLen * width, count: Int(length) * width)
            }
            return packed
        }
        let q = pack(padded.q, width: qw), k = pack(padded.k, width: kvw), v = pack(padded.v, width: kvw)
        let dOut = pack(padded.dOut, width: qw)
        let out = nanTensor([rows + 1, qw]), lse = nanTensor([rows + 1, padded.heads])
        let dQ = nanTensor([rows + 1, qw]), dK = nanTensor([rows + 1, kvw]), dV = nanTensor([rows + 1, kvw])
        lengths.withUnsafeBufferPointer { lengthPointer in
            starts.withUnsafeBufferPointer { startPointer in
                Attention.forward(out: out.data, logSumExp: lse.data, q: q.data, k: k.data, v: v.data,
                                  lengths: lengthPointer.baseAddress!, starts: startPointer.baseAddress!,
                                  batch: lengths.count, seqLen: padded.seqLen, heads: padded.heads,
                                  kvHeads: padded.kvHeads, headDim: padded.headDim)
                Attention.backward(dQ: dQ.data, dK: dK.data, dV: dV.data, dOut: dOut.data, out: out.data,
                                   logSumExp: lse.data, q: q.data, k: k.data, v: v.data,
                                   lengths: lengthPointer.baseAddress!, starts: startPointer.baseAddress!,
                                   batch: lengths.count, seqLen: padded.seqLen, heads: padded.heads,
                                   kvHeads: padded.kvHeads, headDim: padded.headDim)
            }
        }
        for (name, got, reference, width) in [("out", out, want[0], qw), ("lse", lse, want[1], padded.heads),
                                              ("dQ", dQ, want[2], qw), ("dK", dK, want[3], kvw), ("dV", dV, want[4], kvw)] {
            for (b, length) in lengths.enumerated() {
                for t in 0..<Int(length) {
                    for c in 0..<width {
                        let x = got[(starts[b] + t) * width + c], y = reference[(b * padded.seqLen + t) * width + c]
                        XCTAssertEqual(x, y, accuracy: 2e-6 * max(1, abs(y)), "\(name) example \(b) row \(t)")
                    }
                }
            }
            XCTAssertTrue((0..<width).allSatisfy { got[rows * width + $0].isNaN }, "\(name) wrote past the last row")
        }
    }

    /// Threads.set(1) and Threads.set(2) give the same bits, and two runs give the same bits.
    func testDeterministicAcrossThreadCountsAndRuns() {
        let p = Problem(batch: 2, seqLen: 100, heads: 4, kvHeads: 2, headDim: 16, lengths: [100, 57], seed: 4)
        let one = withThreads(1) { p.tiled() }, two = withThreads(2) { p.tiled() }, again = withThreads(2) { p.tiled() }
        for (i, name) in ["out", "lse", "dQ", "dK", "dV"].enumerated() {
            XCTAssertTrue(bitwiseEqual(two[i], again[i]), "\(name) differs between two runs")
            XCTAssertTrue(bitwiseEqual(one[i], two[i]), "\(name) differs between 1 and 2 threads")
        }
    }

    /// Generation's attention over a cache gives the rows of the batch attention, prompt chunk then single tokens.
    func testCachedAttentionMatchesBatchAttention() {
        let T = 40, heads = 4, kvHeads = 2, hd = 8
        let p = Problem(batch: 1, seqLen: T, heads: heads, kvHeads: kvHeads, headDim: hd, lengths: [Int32(T)], seed: 5)
        let want = p.tiled()[0]
        let out = nanTensor(p.q.shape), scores = nanTensor([heads, T])
        var start = 0
        for rows in [13, 1, 1, 25] {
            Attention.cachedForward(out: out.data + start * heads * hd, q: p.q.data + start * heads * hd,
                                    keys: p.k.data, values: p.v.data, scores: scores.data, scoresStride: T,
                                    rows: rows, start: start, heads: heads, kvHeads: kvHeads, headDim: hd)
            start += rows
        }
        checkClose("cached attention", out, want, tolerance: 2e-6)
    }
}
