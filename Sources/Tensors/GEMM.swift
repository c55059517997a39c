import CBLAS

/// Matrix products through OpenBLAS `cblas_sgemm`, always on whole row panels.
///
/// Layout legend used throughout LoRAKit: a linear layer's weight is `[out, in]` (PyTorch's), activations
/// are `[rows, features]` with rows = B·T. So `y = x Wᵀ` is `linear`, and its two backward products are
/// `dx += dy W` and `dW += dyᵀ x`.
public enum GEMM {
    /// C[m,n] = alpha · op(A) · op(B) + beta · C, row-major with explicit leading dimensions.
    @inline(__always)
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                             alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            else if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
            return
        }
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
