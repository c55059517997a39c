import Foundation
import Tensors

/// The throughput `cblas_sgemm` reaches on this machine, with the threads and OpenBLAS kernel of this process:
/// the ceiling a trainer's achieved GFLOP/s is compared with (DESIGN §5).
public enum SGEMMCeiling {
    /// Best GFLOP/s of `cblas_sgemm` over a few square products of each size in `sizes` (after one untimed
    /// product per size), taking the better of OpenBLAS's own threading and LoRAKit's panel split
    /// (`GEMM.sgemm`), so the ceiling is the highest this process can reach either way.
    ///
    /// Sizes around 1–2 k are where OpenBLAS reaches its peak; the buffers (3·n² floats) are freed before this
    /// returns, so a benchmark that measures the ceiling first does not count them in its peak RSS.
    public static func measure(sizes: [Int] = [1024, 2048], repeats: Int = 3) -> Double {
        let threads = Threads.count
        // OpenBLAS on every panel of the split, whatever kernel the run itself uses
        let split = measure(sizes: sizes, repeats: repeats) { n, a, b, c in
            GEMM.sgemm(transA: false, transB: true, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, beta: 0, c: c, ldc: n,
                       kernel: .openblas)
        }
        let openBLAS = Threads.withBLASThreads(threads) {
            measure(sizes: sizes, repeats: repeats) { n, a, b, c in
                GEMM.openBLAS(transA: false, transB: true, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n,
                              beta: 0, c: c, ldc: n)
            }
        }
        return max(split, openBLAS)
    }

    private static func measure(sizes: [Int], repeats: Int,
                                product: (Int, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void)
        -> Double {
        var best = 0.0
        for n in sizes where n > 0 {
            let a = Tensor(shape: [n, n]), b = Tensor(shape: [n, n]), c = Tensor(shape: [n, n])
            var rng = RandomGenerator(seed: UInt64(n))
            rng.fillUniform(a.data, count: a.count, low: -1, high: 1)
            rng.fillUniform(b.data, count: b.count, low: -1, high: 1)
            // The first product warms the caches and OpenBLAS's thread pool.
            for run in 0...repeats {
                let started = DispatchTime.now().uptimeNanoseconds
                // (n, n)·(n, n)ᵀ, the transposed-weight layout of a linear layer
                product(n, a.data, b.data, c.data)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                if run > 0 { best = max(best, 2 * Double(n) * Double(n) * Double(n) / seconds / 1e9) }
            }
        }
        return best
    }
}
