import CBLAS
import Dispatch
import Foundation

/// Thread placement: one set of threads for everything, so OpenBLAS's pool and LoRAKit's loops never compete.
///
/// OpenBLAS runs single-threaded: `GEMM.sgemm` splits a large product into `Threads.count` row (or column)
/// panels and runs them on `parallelFor`, like every other kernel. OpenBLAS's own pool would otherwise keep
/// its workers spinning (`sched_yield`) between products, on the cores the elementwise loops need. Work is
/// split into fixed chunks that depend only on the sizes and `Threads.count`, so results do not depend on
/// scheduling (same seed and thread count, same bits).
public enum Threads {
    nonisolated(unsafe) private static var current = 1
    nonisolated(unsafe) private static var blasConfigured = false

    /// The number of threads LoRAKit's loops and matrix products use.
    public static var count: Int {
        if !blasConfigured { configureBLAS() }
        return current
    }

    /// Uses `n` threads (n ≥ 1) from now on.
    public static func set(_ n: Int) {
        current = max(1, n)
        configureBLAS()
    }

    /// OpenBLAS stays on the calling thread; parallelism comes from the split in `GEMM.sgemm`.
    private static func configureBLAS() {
        openblas_set_num_threads(1)
        blasConfigured = true
    }

    /// The processor cores available to this process.
    public static var available: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// The OpenBLAS kernel in use ("Haswell", "SkylakeX", "Zen", …).
    public static var blasCore: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// Whether OpenBLAS runs its AVX-512 kernels (cores SkylakeX, Cooperlake, SapphireRapids).
    public static var blasUsesAVX512: Bool {
        ["skylakex", "cooperlake", "sapphirerapids"].contains(blasCore.lowercased())
    }

    /// Runs `body` with OpenBLAS's own pool at `n` threads, then returns it to one thread (for measuring
    /// `cblas_sgemm` as OpenBLAS threads it, next to LoRAKit's split).
    public static func withBLASThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
        openblas_set_num_threads(Int32(max(1, n)))
        defer { configureBLAS() }
        return try body()
    }
}

/// Runs `body` over `0..<count` split into at most `Threads.count` contiguous chunks, in parallel.
///
/// Chunk boundaries depend only on `count` and the thread count, so any per-chunk reduction is
/// deterministic. Use `minChunk` to keep tiny loops on the calling thread. Calls from inside `body` run
/// serially on the calling thread (the machine's cores are already busy).
@inline(__always)
public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    if count <= 0 { return }
    let chunks = min(Threads.count, max(1, count / max(1, minChunk)))
    if chunks <= 1 || ParallelRegion.isInside { body(0..<count); return }
    ParallelRegion.run(chunks) { c in
        let lo = count * c / chunks, hi = count * (c + 1) / chunks
        if lo < hi { body(lo..<hi) }
    }
}

/// Runs `body(chunk)` for chunk in `0..<chunks` on that many threads and marks them as inside a parallel
/// region, so nested `parallelFor` and `GEMM.sgemm` calls stay serial instead of oversubscribing the cores.
public enum ParallelRegion {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// True on a thread that is running a chunk of a parallel loop.
    public static var isInside: Bool { pthread_getspecific(key) != nil }

    static func run(_ chunks: Int, _ body: (Int) -> Void) {
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let marker = UnsafeMutableRawPointer(bitPattern: 1)
            pthread_setspecific(key, marker)
            body(c)
            pthread_setspecific(key, nil)
        }
    }
}
