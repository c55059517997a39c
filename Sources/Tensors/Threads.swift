import CBLAS
import Dispatch
import Foundation

/// Thread placement: OpenBLAS's threads and LoRAKit's own parallel loops take turns, never run together.
///
/// Matrix products run on OpenBLAS's pool; the elementwise and attention loops between them run on
/// `parallelFor`, split into exactly `Threads.count` fixed chunks so that results do not depend on
/// scheduling (same seed and thread count, same bits).
public enum Threads {
    nonisolated(unsafe) private static var current = 1

    /// The number of threads both pools use.
    public static var count: Int { current }

    /// Sets both pools to `n` threads (n ≥ 1).
    public static func set(_ n: Int) {
        current = max(1, n)
        openblas_set_num_threads(Int32(current))
    }

    /// The processor cores available to this process.
    public static var available: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// The OpenBLAS kernel in use ("Haswell", "SkylakeX", …).
    public static var blasCore: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}

/// Runs `body` over `0..<count` split into at most `Threads.count` contiguous chunks, in parallel.
///
/// Chunk boundaries depend only on `count` and the thread count, so any per-chunk reduction is
/// deterministic. Use `minChunk` to keep tiny loops on the calling thread.
@inline(__always)
public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    if count <= 0 { return }
    let chunks = min(Threads.count, max(1, count / max(1, minChunk)))
    if chunks <= 1 { body(0..<count); return }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        let lo = count * c / chunks, hi = count * (c + 1) / chunks
        if lo < hi { body(lo..<hi) }
    }
}
