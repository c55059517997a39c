import Foundation

/// Next-token cross-entropy over the vocabulary, fused with its gradient.
public enum CrossEntropy {
    /// Returns Σ −log softmax(logits[r])[targets[r]] over the rows whose target is ≥ 0, in Double.
    ///
    /// logits is (rows, vocab), targets is (rows); a target < 0 marks a row without loss (prompt, padding).
    /// When `computeGradient` is true, logits is OVERWRITTEN IN PLACE with gradScale · dLoss/dLogits
    /// = gradScale · (softmax − onehot(target)), and rows without a target become zeros; otherwise logits is
    /// left untouched. Pass gradScale = 1 / (unmasked tokens of the optimizer step) for a mean loss.
    /// Targets must be < vocab (checked by `TokenIDs.validate` where the data comes in).
    /// Rows run in parallel; each row's loss is kept and the rows are summed in order, so the result does not
    /// depend on the thread count.
    public static func forwardBackward(logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
                                       rows: Int, vocab: Int, gradScale: Float,
                                       computeGradient: Bool) -> Double {
        if rows == 0 { return 0 }
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: rows) { rowLoss in
            parallelFor(rows, minChunk: max(1, 65_536 / max(vocab, 1))) { range in
                for r in range {
                    let x = logits + r * vocab
                    let target = Int(targets[r])
                    guard target >= 0 else {
                        rowLoss[r] = 0
                        if computeGradient { x.update(repeating: 0, count: vocab) }
                        continue
                    }
                    precondition(target < vocab, "target \(target) outside the vocabulary of \(vocab)")
                    let m = maximumLanes(x, count: vocab)
                    let targetLogit = x[target]
                    let sum: Double
                    if computeGradient {
                        sum = exponentiateShifted(x, count: vocab, shift: m)
                        // dLoss/dx = softmax(x) − onehot(target)
                        scaleLanes(x, count: vocab, by: gradScale / Float(sum))
                        x[target] -= gradScale
                    } else {
                        sum = sumExponentials(x, count: vocab, shift: m)
                    }
                    // −log softmax[target] = log Σ exp(x − m) + m − x[target]
                    rowLoss[r] = Foundation.log(sum) + Double(m) - Double(targetLogit)
                }
            }
            var total: Double = 0
            for r in 0..<rows { total += rowLoss[r] }
            return total
        }
    }
}

/// A numerically stable softmax, for sampling.
public enum Softmax {
    /// x is (count) -> x = softmax(x) in place. Does nothing when count is 0.
    public static func inPlace(_ x: UnsafeMutablePointer<Float>, count: Int) {
        if count == 0 { return }
        let m = maximumLanes(x, count: count)
        let sum = exponentiateShifted(x, count: count, shift: m)
        scaleLanes(x, count: count, by: Float(1 / sum))
    }
}
