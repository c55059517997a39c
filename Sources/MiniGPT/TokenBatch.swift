/// A padded batch of token sequences: B sequences of up to T tokens, right-padded.
///
/// `targets[b·T + t]` is the token that position t should predict, or −1 where no loss is taken
/// (padding, the prompt when it is masked, the last position).
public struct TokenBatch: Sendable {
    public let batch: Int
    public let seqLen: Int
    public var ids: [Int32]        // (B·T)
    public var lengths: [Int32]    // (B)
    public var targets: [Int32]    // (B·T)

    public var rows: Int { batch * seqLen }

    public init(batch: Int, seqLen: Int, ids: [Int32], lengths: [Int32], targets: [Int32]) {
        precondition(ids.count == batch * seqLen && targets.count == batch * seqLen && lengths.count == batch)
        self.batch = batch
        self.seqLen = seqLen
        self.ids = ids
        self.lengths = lengths
        self.targets = targets
    }

    /// Sequences padded to the longest, with next-token targets on every real position but the last.
    public init(sequences: [[Int32]], padId: Int32 = 0) {
        let t = max(1, sequences.map(\.count).max() ?? 1)
        var ids = [Int32](repeating: padId, count: sequences.count * t)
        var targets = [Int32](repeating: -1, count: sequences.count * t)
        for (b, seq) in sequences.enumerated() {
            for (i, id) in seq.enumerated() {
                ids[b * t + i] = id
                if i + 1 < seq.count { targets[b * t + i] = seq[i + 1] }
            }
        }
        self.init(batch: sequences.count, seqLen: t, ids: ids,
                  lengths: sequences.map { Int32($0.count) }, targets: targets)
    }

    /// Positions that carry a loss.
    public var targetCount: Int { targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }
}
