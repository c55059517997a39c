/// Token embedding lookup.
public enum Embedding {
    /// Copies one table row per token. Ids must be < V (check them with `TokenIDs.validate` on the way in).
    ///
    /// table is (V, dim), ids is (rows) -> out is (rows, dim).
    public static func forward(out: UnsafeMutablePointer<Float>, table: UnsafePointer<Float>,
                               ids: UnsafePointer<Int32>, rows: Int, dim: Int) {
        parallelFor(rows, minChunk: max(1, 16_384 / max(dim, 1))) { range in
            for r in range {
                let id = Int(ids[r])
                precondition(id >= 0, "embedding id \(id) is negative")
                (out + r * dim).update(from: table + id * dim, count: dim)
            }
        }
    }

    /// Gradient of `forward`, ACCUMULATED into dTable; serial over rows so repeated ids add in a fixed order.
    ///
    /// dOut is (rows, dim), ids is (rows) -> dTable (V, dim) +=.
    public static func backward(dTable: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                ids: UnsafePointer<Int32>, rows: Int, dim: Int) {
        for r in 0..<rows {
            let id = Int(ids[r])
            precondition(id >= 0, "embedding id \(id) is negative")
            Elementwise.addInPlace(dTable + id * dim, dOut + r * dim, count: dim)
        }
    }
}

/// Checks of token ids coming from user data, done once where the data enters, before any kernel reads them.
public enum TokenIDs {
    /// Throws unless every id is in 0..<vocab; with `allowIgnored`, −1 (a target without loss) is accepted too.
    ///
    /// `context` names the data in the message, e.g. "train.json record 17 targets".
    public static func validate(_ ids: UnsafePointer<Int32>, count: Int, vocab: Int, allowIgnored: Bool = false,
                                context: String) throws {
        for i in 0..<count {
            let id = Int(ids[i])
            if id >= vocab || id < (allowIgnored ? -1 : 0) {
                throw LoRAKitError("\(context): token id \(id) at position \(i) is outside the model's "
                    + "vocabulary 0..<\(vocab); the tokenizer does not match the model")
            }
        }
    }
}
