import Foundation
import MiniGPT
import Tensors

/// Cuts encoded examples into packed batches, in a seeded shuffled order per epoch.
///
/// The order of epoch e depends only on the seed and e, so a resumed run sees the same batches as an
/// uninterrupted one. Every example appears exactly once per epoch; the last batch may be smaller.
public struct Batcher {
    public let examples: [EncodedExample]
    public let batchSize: Int
    public let seed: UInt64
    /// Whether BOS and prompt positions carry no loss.
    public let maskPrompt: Bool

    /// The permutation of the most recent epoch asked for: one shuffle per epoch, not per batch.
    private let cache = OrderCache()

    /// A batcher over `examples` (at least one) with `batchSize` (at least 1) examples per batch.
    public init(examples: [EncodedExample], batchSize: Int, seed: UInt64, maskPrompt: Bool = true) throws {
        guard !examples.isEmpty else { throw LoRAKitError("no training examples to batch") }
        guard batchSize >= 1 else { throw LoRAKitError("--batch-size must be at least 1, not \(batchSize)") }
        self.examples = examples
        self.batchSize = batchSize
        self.seed = seed
        self.maskPrompt = maskPrompt
    }

    /// Batches per epoch, the last partial batch included.
    public var batchesPerEpoch: Int { (examples.count + batchSize - 1) / batchSize }

    /// The example indices of epoch `epoch` in the order they are batched.
    public func order(epoch: Int) -> [Int] {
        cache.order(epoch: epoch) { Self.permutation(count: examples.count, seed: seed, epoch: epoch) }
    }

    /// The examples of batch `index` (0..<batchesPerEpoch) of epoch `epoch`.
    public func examples(epoch: Int, index: Int) -> [EncodedExample] {
        precondition(index >= 0 && index < batchesPerEpoch, "batch \(index) of \(batchesPerEpoch)")
        let order = order(epoch: epoch)
        let range = (index * batchSize)..<min((index + 1) * batchSize, order.count)
        return range.map { examples[order[$0]] }
    }

    /// Batch `index` (0..<batchesPerEpoch) of epoch `epoch`, packed.
    public func batch(epoch: Int, index: Int) -> TokenBatch {
        Self.makeTokenBatch(examples(epoch: epoch, index: index), maskPrompt: maskPrompt)
    }

    /// A batch of `examples` (at least one), packed: their tokens back to back, no padding (attention keeps each
    /// example to itself), so a batch costs its real tokens only. Targets are the next token where a loss is
    /// taken and -1 elsewhere (the last position, and BOS and prompt positions when `maskPrompt`).
    public static func makeTokenBatch(_ examples: [EncodedExample], maskPrompt: Bool) -> TokenBatch {
        precondition(!examples.isEmpty, "a batch needs at least one example")
        let targets = examples.map { example -> [Int32] in
            // The target at position i is ids[i + 1]; masked, it counts only where that token is learned (the
            // output and EOS; a conversation's assistant messages).
            example.ids.indices.map { i in
                i + 1 < example.ids.count && (!maskPrompt || example.isLearned(i + 1)) ? example.ids[i + 1] : -1
            }
        }
        return TokenBatch(packing: examples.map(\.ids), targets: targets)
    }

    /// A seeded split of `records` into training and validation sets, each in the original order.
    ///
    /// `valFraction` of the records (rounded, at least 1 when the fraction is positive and there are 2 or more
    /// records, and never all of them) go to validation. Throws when `valFraction` is outside [0, 1).
    public static func split<Record>(_ records: [Record], valFraction: Double, seed: UInt64) throws
        -> (train: [Record], val: [Record]) {
        guard valFraction >= 0, valFraction < 1 else {
            throw LoRAKitError("--val-fraction must be in [0, 1), not \(valFraction)")
        }
        guard valFraction > 0, records.count >= 2 else { return (records, []) }
        let valCount = min(records.count - 1, max(1, Int((valFraction * Double(records.count)).rounded())))
        // A stream apart from the epochs' shuffles (epoch -1 is never batched).
        let chosen = Set(permutation(count: records.count, seed: seed, epoch: -1).prefix(valCount))
        var train: [Record] = [], val: [Record] = []
        for (i, record) in records.enumerated() {
            if chosen.contains(i) { val.append(record) } else { train.append(record) }
        }
        return (train, val)
    }

    /// Fisher–Yates over 0..<count with a generator seeded from (seed, epoch).
    static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        // splitmix inside RandomGenerator decorrelates neighbouring seeds; the odd constant separates epochs.
        var rng = RandomGenerator(seed: seed ^ (UInt64(bitPattern: Int64(epoch)) &* 0x9E37_79B9_7F4A_7C15))
        var order = Array(0..<count)
        var i = count - 1
        while i > 0 {
            // j uniform in 0...i: the high word of a 64×64-bit product (Lemire), without modulo's clustering.
            let j = Int(rng.next().multipliedFullWidth(by: UInt64(i + 1)).high)
            order.swapAt(i, j)
            i -= 1
        }
        return order
    }
}

/// The last epoch's permutation, shared by copies of a Batcher and safe to use from several threads.
private final class OrderCache: @unchecked Sendable {
    private let lock = NSLock()
    private var epoch: Int?
    private var order: [Int] = []

    func order(epoch: Int, compute: () -> [Int]) -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        if self.epoch != epoch {
            order = compute()
            self.epoch = epoch
        }
        return order
    }
}
