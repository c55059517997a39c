import CBLAS
import CKernels

/// Matrix products, split into row or column panels over LoRAKit's threads.
///
/// Each panel runs single-threaded on LoRAKit's AVX2 kernel (`lk_sgemm`, `Sources/CKernels/sgemm.c`) where the CPU
/// has AVX2 and FMA, OpenBLAS runs AVX2 kernels too, and the product is not thin (every side at least 16); on
/// OpenBLAS's `cblas_sgemm` otherwise.
///
/// Layout legend used throughout LoRAKit: a linear layer's weight is `[out, in]` (PyTorch's), activations
/// are `[rows, features]` with rows = B·T. So `y = x Wᵀ` is `linear`, and its two backward products are
/// `dx += dy W` and `dW += dyᵀ x`.
public enum GEMM {
    /// Products below this many multiply-adds run on one thread: splitting costs more than it saves.
    static let splitThreshold = 1 << 20
    /// A one-row product streams its weight from memory, two flops per weight: splitting pays from a few hundred
    /// KB of weights on (768 × 768 at M is 2.4 MB, about 180 µs on one core against one hand-off of tens of µs).
    static let oneRowSplitThreshold = 1 << 17

    /// Which code multiplies the panels of a large product.
    public enum Kernel: String, CaseIterable, Sendable {
        /// LoRAKit's blocked AVX2 + FMA kernel where the CPU has it (OpenBLAS on other CPUs and for thin products).
        case lorakit
        /// OpenBLAS's `cblas_sgemm` for everything (the kernel before LoRAKit had its own; for comparisons).
        case openblas
    }

    /// The kernel of every product from now on (a product may name another); `lora bench --gemm` sets it.
    nonisolated(unsafe) public static var kernel = Kernel.lorakit

    /// Sides below this go to OpenBLAS: LoRA's rank-r products (r < 16) would fill a 6 × 16 register tile by half.
    static let ownKernelMinimumSide = 16

    /// Whether this machine runs LoRAKit's kernel when `kernel` is `.lorakit`: the CPU has AVX2 and FMA, and OpenBLAS
    /// runs AVX2 kernels itself. OpenBLAS's AVX-512 kernels (SkylakeX and later: twice the vector width) beat any
    /// AVX2 code, so where OpenBLAS picked one of them (`OPENBLAS_CORETYPE` unset on an AVX-512 CPU) it keeps every
    /// product.
    static let ownKernelRuns: Bool = lk_has_avx2_fma() == 1 && !Threads.blasUsesAVX512

    /// The kernel that runs the large products: "lorakit-avx2" or "openblas".
    public static var kernelInUse: String {
        kernel == .lorakit && ownKernelRuns ? "lorakit-avx2" : "openblas"
    }

    /// C[m,n] = alpha · op(A) · op(B) + beta · C, row-major with explicit leading dimensions.
    ///
    /// A large product is split into `Threads.count` panels of C — rows or columns, whichever copies less
    /// (one row is a matrix-vector product, split by columns) — each computed by single-threaded OpenBLAS on its
    /// own thread. Every
    /// element of C is still one dot product over all of k in OpenBLAS's order, and the split depends only on
    /// the sizes and the thread count, so the result is deterministic. Inside a parallel region it runs serially.
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                             alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, kernel: Kernel = GEMM.kernel) {
        let threads = Threads.count
        if threads <= 1 || m * n * k < (m == 1 ? oneRowSplitThreshold : splitThreshold) || ParallelRegion.isInside {
            sgemmSerial(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                        b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, kernel: kernel)
            return
        }
        // Every thread packs all of the operand it does not split, so split the larger side: rows when C is at
        // least as tall as wide (op(B), k × n, is copied per thread), columns otherwise (op(A), m × k, is). Panels
        // are multiples of 16 rows or columns (OpenBLAS's register block), so only the last one has an edge.
        if m >= 32 * threads && (m >= n || n < 32 * threads) {
            let blocks = (m + 15) / 16
            ParallelRegion.run(threads) { part in
                let lo = min(m, blocks * part / threads * 16), hi = min(m, blocks * (part + 1) / threads * 16)
                if lo >= hi { return }
                // rows lo..<hi of C come from rows lo..<hi of op(A)
                sgemmSerial(transA: transA, transB: transB, m: hi - lo, n: n, k: k, alpha: alpha,
                            a: transA ? a + lo : a + lo * lda, lda: lda, b: b, ldb: ldb,
                            beta: beta, c: c + lo * ldc, ldc: ldc, kernel: kernel)
            }
        } else {
            let blocks = (n + 15) / 16
            let parts = min(threads, blocks)
            ParallelRegion.run(parts) { part in
                let lo = min(n, blocks * part / parts * 16), hi = min(n, blocks * (part + 1) / parts * 16)
                if lo >= hi { return }
                // columns lo..<hi of C come from columns lo..<hi of op(B)
                sgemmSerial(transA: transA, transB: transB, m: m, n: hi - lo, k: k, alpha: alpha,
                            a: a, lda: lda, b: transB ? b + lo * ldb : b + lo, ldb: ldb,
                            beta: beta, c: c + lo, ldc: ldc, kernel: kernel)
            }
        }
    }

    /// `sgemm` on the calling thread only (for kernels that are already split over threads).
    @inline(__always)
    public static func sgemmSerial(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                   alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                                   b: UnsafePointer<Float>, ldb: Int,
                                   beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                                   kernel: Kernel = GEMM.kernel) {
        if m == 0 || n == 0 { return }
        if m == 1 && k > 0 && transB && (!transA || lda == 1) {
            // one row times a weight's rows (a linear layer on one token): the AVX2 kernel, when the CPU has it
            if lk_sgemv_rows(c, b, ldb, a, n, k, alpha, beta) != 0 { return }
        }
        if m == 1 && k > 0 {
            // one row: a matrix-vector product, y[n] = alpha · op(B)ᵀ a + beta · y (OpenBLAS 0.3.21's sgemm
            // would pack all of B first, for nothing); y is cleared first so that beta 0 ignores what was there
            if beta == 0 { c.update(repeating: 0, count: n) }
            cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, Int32(transB ? n : k), Int32(transB ? k : n),
                        alpha, b, Int32(ldb), a, Int32(transA ? lda : 1), beta, c, 1)
            return
        }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            else if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
            return
        }
        if kernel == .lorakit && ownKernelRuns && min(m, n, k) >= ownKernelMinimumSide
            && lk_sgemm(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) != 0 {
            return
        }
        openBLAS(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                 beta: beta, c: c, ldc: ldc)
    }

    /// `cblas_sgemm` itself, on the calling thread (also what `lora bench` measures its ceiling with).
    public static func openBLAS(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                                a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// out[rows, outF] (+)= input[rows, inF] · weight[outF, inF]ᵀ — a linear layer's forward.
    public static func linear(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int,
                              accumulate: Bool = false) {
        sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures,
              a: input, lda: inFeatures, b: weight, ldb: inFeatures,
              beta: accumulate ? 1 : 0, c: out, ldc: outFeatures)
    }

    /// One weight of `linearOneRow(input:inFeatures:_:_:_:)`: out[rows] (+)= weight[rows, inF] · input.
    public struct OneRowProduct {
        public let out: UnsafeMutablePointer<Float>
        public let weight: UnsafePointer<Float>
        public let rows: Int
        public let accumulate: Bool

        public init(out: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, rows: Int, accumulate: Bool = false) {
            self.out = out
            self.weight = weight
            self.rows = rows
            self.accumulate = accumulate
        }
    }

    /// One input row through up to three weights that read it (q, k, v; gate, up), in one parallel region split
    /// over all their rows together: each product alone would hand work to the other threads and wait for it
    /// once, and generating a token is dozens of such hand-offs. The rows of each product come out as
    /// `linear(rows: 1)` computes them.
    public static func linearOneRow(input: UnsafePointer<Float>, inFeatures: Int, _ first: OneRowProduct,
                                    _ second: OneRowProduct? = nil, _ third: OneRowProduct? = nil) {
        let secondStart = first.rows, thirdStart = secondStart + (second?.rows ?? 0)
        let total = thirdStart + (third?.rows ?? 0)
        // rows lo..<hi of the products laid end to end
        func run(_ lo: Int, _ hi: Int) {
            oneRowPart(first, start: 0, lo: lo, hi: hi, input: input, inFeatures: inFeatures)
            if let second { oneRowPart(second, start: secondStart, lo: lo, hi: hi, input: input, inFeatures: inFeatures) }
            if let third { oneRowPart(third, start: thirdStart, lo: lo, hi: hi, input: input, inFeatures: inFeatures) }
        }
        let threads = Threads.count
        if threads <= 1 || total * inFeatures < oneRowSplitThreshold || ParallelRegion.isInside {
            run(0, total)
            return
        }
        let blocks = (total + 15) / 16
        ParallelRegion.run(threads) { part in
            run(min(total, blocks * part / threads * 16), min(total, blocks * (part + 1) / threads * 16))
        }
    }

    /// The rows of `product` that fall in lo..<hi, when its first row is row `start` of the products end to end.
    @inline(__always)
    private static func oneRowPart(_ product: OneRowProduct, start: Int, lo: Int, hi: Int, input: UnsafePointer<Float>,
                                   inFeatures: Int) {
        let a = max(lo, start) - start, b = min(hi, start + product.rows) - start
        if a >= b { return }
        sgemmSerial(transA: false, transB: true, m: 1, n: b - a, k: inFeatures, a: input, lda: inFeatures,
                    b: product.weight + a * inFeatures, ldb: inFeatures,
                    beta: product.accumulate ? 1 : 0, c: product.out + a, ldc: b - a)
    }

    /// dInput[rows, inF] (+)= dOut[rows, outF] · weight[outF, inF] — gradient through a linear layer.
    public static func linearBackwardInput(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                           weight: UnsafePointer<Float>, rows: Int, inFeatures: Int,
                                           outFeatures: Int, accumulate: Bool = true) {
        sgemm(transA: false, transB: false, m: rows, n: inFeatures, k: outFeatures,
              a: dOut, lda: outFeatures, b: weight, ldb: inFeatures,
              beta: accumulate ? 1 : 0, c: dInput, ldc: inFeatures)
    }

    /// dWeight[outF, inF] (+)= dOut[rows, outF]ᵀ · input[rows, inF] — a linear layer's weight gradient.
    public static func linearBackwardWeight(dWeight: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                            input: UnsafePointer<Float>, rows: Int, inFeatures: Int,
                                            outFeatures: Int, accumulate: Bool = true) {
        sgemm(transA: true, transB: false, m: outFeatures, n: inFeatures, k: rows,
              a: dOut, lda: outFeatures, b: input, ldb: inFeatures,
              beta: accumulate ? 1 : 0, c: dWeight, ldc: inFeatures)
    }
}
