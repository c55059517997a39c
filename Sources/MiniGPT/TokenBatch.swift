/// A batch of B token sequences laid out as rows: sequence b owns rows `starts[b]..<starts[b + 1]`, its
/// `lengths[b]` tokens first and padding after them.
///
/// Two layouts: padded (every sequence owns T = `seqLen` rows, the longest sequence's length) and packed (each
/// sequence owns exactly its tokens, no padding at all). The model computes every row it is given and attention
/// never crosses from one sequence into another, so both give the same loss and gradients on the real tokens; the
/// packed layout skips the work on padding. `targets[r]` is the token row r should predict, or −1 where no loss is
/// taken (padding, the prompt when it is masked, the last position).
public struct TokenBatch: Sendable {
    public let batch: Int
    /// The longest span of rows any sequence owns (T of the padded layout).
    public let seqLen: Int
    public var ids: [Int32]        // (rows)
    public var lengths: [Int32]    // (B)
    public var targets: [Int32]    // (rows)
    /// Row where each sequence starts, and `rows` last (B + 1 entries).
    public let starts: [Int]

    public var rows: Int { starts[batch] }

    /// The padded layout: B sequences of T rows each, right-padded.
    public init(batch: Int, seqLen: Int, ids: [Int32], lengths: [Int32], targets: [Int32]) {
        precondition(ids.count == batch * seqLen && targets.count == batch * seqLen && lengths.count == batch)
        self.batch = batch
        self.seqLen = seqLen
        self.ids = ids
        self.lengths = lengths
        self.targets = targets
        starts = (0...batch).map { $0 * seqLen }
    }

    /// The packed layout: the sequences' rows back to back, `targets[b]` as long as `sequences[b]`.
    public init(packing sequences: [[Int32]], targets: [[Int32]]) {
        precondition(sequences.count == targets.count && zip(sequences, targets).allSatisfy { $0.count == $1.count })
        batch = sequences.count
        seqLen = sequences.map(\.count).max() ?? 0
        ids = sequences.flatMap { $0 }
        self.targets = targets.flatMap { $0 }
        lengths = sequences.map { Int32($0.count) }
        var starts = [0]
        for sequence in sequences { starts.append(starts[starts.count - 1] + sequence.count) }
        self.starts = starts
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

    /// The sequence row `row` belongs to, and its position in that sequence.
    public func location(ofRow row: Int) -> (sequence: Int, position: Int) {
        var low = 0, high = batch - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if starts[middle] <= row { low = middle } else { high = middle - 1 }
        }
        return (low, row - starts[low])
    }

    /// The position of every row inside its sequence (padding rows continue counting).
    public var positions: [Int32] {
        var positions = [Int32](repeating: 0, count: rows)
        for b in 0..<batch {
            for r in starts[b]..<starts[b + 1] { positions[r] = Int32(r - starts[b]) }
        }
        return positions
    }
}
