import XCTest
@testable import Tensors

/// One attention problem: inputs from fixed seeds, outputs pre-filled with NaN so that an unwritten element shows.
private final class AttentionProblem {
    let batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int
    var lengths: [Int32]
    let q: Tensor, k: Tensor, v: Tensor
    let out: Tensor, probs: Tensor
    let dQ: Tensor, dK: Tensor, dV: Tensor, scratch: Tensor

    init(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, lengths: [Int32], seed: UInt64) {
        self.batch = batch; self.seqLen = seqLen; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
        self.lengths = lengths
        q = randomTensor([batch, seqLen, heads, headDim], seed: seed, scale: 1.5)
        k = randomTensor([batch, seqLen, kvHeads, headDim], seed: seed + 1, scale: 1.5)
        v = randomTensor([batch, seqLen, kvHeads, headDim], seed: seed + 2)
        out = nanTensor([batch, seqLen, heads, headDim])
        probs = nanTensor([batch, heads, seqLen, seqLen])
        dQ = nanTensor(q.shape); dK = nanTensor(k.shape); dV = nanTensor(v.shape)
        scratch = nanTensor([Attention.scratchCount(seqLen: seqLen)])
    }

    func forward() {
        lengths.withUnsafeBufferPointer {
            Attention.forward(out: out.data, probs: probs.data, q: q.data, k: k.data, v: v.data,
                              lengths: $0.baseAddress!, batch: batch, seqLen: seqLen,
                              heads: heads, kvHeads: kvHeads, headDim: headDim)
        }
    }

    func backward(dOut: Tensor) {
        lengths.withUnsafeBufferPointer {
            Attention.backward(dQ: dQ.data, dK: dK.data, dV: dV.data, dOut: dOut.data, probs: probs.data,
                               q: q.data, k: k.data, v: v.data, lengths: $0.baseAddress!,
                               batch: batch, seqLen: seqLen, heads: heads, kvHeads: kvHeads, headDim: headDim,
                               scratch: scratch.data)
        }
    }

    /// A triple loop in Double: query t of example b sees keys j ≤ t with j < lengths[b].
    func naive() -> (out: Tensor, probs: Tensor) {
        let want = Tensor(shape: out.shape), wantProbs = Tensor(shape: probs.shape)
        let group = heads / kvHeads, scale = 1 / Double(headDim).squareRoot()
        for b in 0..<batch {
            for h in 0..<heads {
                for t in 0..<seqLen {
                    let allowed = min(t + 1, Int(lengths[b]))
                    if allowed == 0 { continue }
                    var scores = [Double](repeating: 0, count: allowed)
                    for j in 0..<allowed {
                        for d in 0..<headDim {
                            scores[j] += Double(q[((b * seqLen + t) * heads + h) * headDim + d])
                                * Double(k[((b * seqLen + j) * kvHeads + h / group) * headDim + d])
                        }
                        scores[j] *= scale
                    }
                    let m = scores.max()!
                    let e = scores.map { exp($0 - m) }
                    let sum = e.reduce(0, +)
                    for j in 0..<allowed {
                        let p = e[j] / sum
                        wantProbs[((b * heads + h) * seqLen + t) * seqLen + j] = Float(p)
                        for d in 0..<headDim {
                            want[((b * seqLen + t) * heads + h) * headDim + d] +=
                                Float(p * Double(v[((b * seqLen + j) * kvHeads + h / group) * headDim + d]))
                        }
                    }
                }
            }
        }
        return (want, wantProbs)
    }
}

final class AttentionTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    func testForwardMatchesNaiveTripleLoop() {
        // the second problem spans three row blocks of 64 queries, with padding inside the second block
        for (i, problem) in [
            AttentionProblem(batch: 2, seqLen: 6, heads: 4, kvHeads: 2, headDim: 8, lengths: [6, 4], seed: 20),
            AttentionProblem(batch: 2, seqLen: 150, heads: 4, kvHeads: 1, headDim: 16, lengths: [150, 97], seed: 30),
        ].enumerated() {
            problem.forward()
            let (want, wantProbs) = problem.naive()
            checkClose("attention out \(i)", problem.out, want, tolerance: 1e-5)
            checkClose("attention probs \(i)", problem.probs, wantProbs, tolerance: 1e-6)
        }
    }

    func testPaddedAndFutureKeysGetZeroProbability() {
        let T = 9
        let problem = AttentionProblem(batch: 3, seqLen: T, heads: 2, kvHeads: 2, headDim: 4, lengths: [9, 3, 0], seed: 40)
        problem.forward()
        for b in 0..<3 {
            let length = Int(problem.lengths[b])
            for h in 0..<2 {
                for t in 0..<T {
                    let row = problem.probs.data + ((b * 2 + h) * T + t) * T
                    var sum: Float = 0
                    for j in 0..<T {
                        if j > t || j >= length {
                            XCTAssertEqual(row[j], 0, "probs[\(b), \(h), \(t), \(j)] must be masked")
                        } else {
                            XCTAssertGreaterThan(row[j], 0)
                        }
                        sum += row[j]
                    }
                    XCTAssertEqual(sum, length == 0 ? 0 : 1, accuracy: 1e-5, "row sum of probs[\(b), \(h), \(t)]")
                }
            }
        }
        // the empty example outputs zeros
        let perExample = T * 2 * 4
        for i in 2 * perExample..<3 * perExample { XCTAssertEqual(problem.out[i], 0) }

        // changing padded keys and values changes nothing for the padded example
        let before = problem.out.clone()
        for t in 3..<T {
            for i in 0..<8 {
                problem.k[(1 * T + t) * 8 + i] += 5
                problem.v[(1 * T + t) * 8 + i] -= 3
            }
        }
        problem.forward()
        XCTAssertTrue(bitwiseEqual(before, problem.out))
    }

    /// Gradient checks of dQ, dK, dV for L = Σ out·w, over every element of each input.
    func testGradientsWithGroupedQueryHeadsAndPadding() {
        let problem = AttentionProblem(batch: 2, seqLen: 6, heads: 4, kvHeads: 2, headDim: 8, lengths: [6, 4], seed: 50)
        checkGradients(problem, samples: nil)
    }

    /// The same over several row blocks, on a sample of the elements.
    func testGradientsAcrossRowBlocks() {
        let problem = AttentionProblem(batch: 2, seqLen: 80, heads: 2, kvHeads: 1, headDim: 8, lengths: [80, 70], seed: 60)
        checkGradients(problem, samples: 150)
    }

    private func checkGradients(_ problem: AttentionProblem, samples: Int?, file: StaticString = #filePath,
                                line: UInt = #line) {
        let projector = randomTensor(problem.out.shape, seed: 99)
        func loss() -> Double {
            problem.forward()
            return projection(problem.out.data, projector.data, count: problem.out.count)
        }
        _ = loss()
        problem.backward(dOut: projector)
        let dQ = problem.dQ.clone(), dK = problem.dK.clone(), dV = problem.dV.clone()
        for (name, input, analytic, seed) in [("q", problem.q, dQ, 1), ("k", problem.k, dK, 2), ("v", problem.v, dV, 3)] {
            let indices = samples.map { GradientCheck.sample($0, of: input.count, seed: UInt64(seed)) }
            GradientCheck.check("attention d\(name)", input: input, analytic: analytic, indices: indices,
                                eps: 1e-2, file: file, line: line, loss: loss)
        }
        // padded keys and values get no gradient
        let T = problem.seqLen, width = problem.kvHeads * problem.headDim
        for b in 0..<problem.batch {
            for t in Int(problem.lengths[b])..<T {
                for i in 0..<width {
                    XCTAssertEqual(dK[(b * T + t) * width + i], 0, file: file, line: line)
                    XCTAssertEqual(dV[(b * T + t) * width + i], 0, file: file, line: line)
                }
            }
        }
    }

    func testEmptyExampleHasZeroGradients() {
        let T = 5
        let problem = AttentionProblem(batch: 2, seqLen: T, heads: 2, kvHeads: 1, headDim: 4, lengths: [0, 5], seed: 70)
        problem.forward()
        problem.backward(dOut: randomTensor(problem.out.shape, seed: 71))
        for i in 0..<T * 2 * 4 { XCTAssertEqual(problem.dQ[i], 0) }
        for i in 0..<T * 4 { XCTAssertEqual(problem.dK[i], 0); XCTAssertEqual(problem.dV[i], 0) }
        for t in [problem.dQ, problem.dK, problem.dV] { XCTAssertTrue(t.array.allSatisfy { $0.isFinite }) }
        XCTAssertTrue(problem.dQ.array[(T * 2 * 4)...].contains { $0 != 0 })
    }

    /// Threads.set(1) and Threads.set(2) give the same bits, and two runs give the same bits.
    func testDeterministicAcrossThreadCountsAndRuns() {
        func run(threads: Int) -> [Tensor] {
            withThreads(threads) {
                let problem = AttentionProblem(batch: 2, seqLen: 100, heads: 4, kvHeads: 2, headDim: 16,
                                               lengths: [100, 57], seed: 80)
                problem.forward()
                problem.backward(dOut: randomTensor(problem.out.shape, seed: 81))
                return [problem.out, problem.probs, problem.dQ, problem.dK, problem.dV]
            }
        }
        let one = run(threads: 1), two = run(threads: 2), twoAgain = run(threads: 2)
        for (i, name) in ["out", "probs", "dQ", "dK", "dV"].enumerated() {
            XCTAssertTrue(bitwiseEqual(two[i], twoAgain[i]), "\(name) differs between two runs")
            XCTAssertTrue(bitwiseEqual(one[i], two[i]), "\(name) differs between 1 and 2 threads")
        }
    }
}
