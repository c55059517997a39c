import CBLAS

/// Thin singular value decomposition of a row-major matrix through LAPACK's `sgesdd` (bundled in OpenBLAS).
///
/// F32 like PyTorch's `torch.linalg.svd` on an F32 weight, which PEFT's PiSSA initialisation uses; the signs of
/// singular vector pairs are LAPACK's and may differ from another library's, while every product U·diag(S)·Vᵀ
/// of leading triplets is the same.
public enum SVD {
    /// `matrix` (m, n) = U (m, k) · diag(S) (k) · Vᵀ (k, n), k = min(m, n), singular values descending.
    public static func thin(_ matrix: Tensor) throws -> (u: Tensor, s: [Float], vt: Tensor) {
        precondition(matrix.shape.count == 2, "SVD.thin: a matrix is 2-D, got \(matrix.shape)")
        let m = matrix.shape[0], n = matrix.shape[1], k = min(m, n)
        // Row-major (m, n) memory is the column-major matrix X = Aᵀ (n × m). LAPACK gives X = U' Σ V'ᵀ, so
        // A = V' Σ U'ᵀ: A's U is V'ᵀ's buffer read row-major as (m, k), A's Vᵀ is U''s buffer read as (k, n).
        let a = matrix.clone()                        // sgesdd overwrites its input
        let u = Tensor(shape: [m, k]), vt = Tensor(shape: [k, n])
        var s = [Float](repeating: 0, count: k)
        var rows = blasint(n), cols = blasint(m), lda = blasint(n), ldu = blasint(n), ldvt = blasint(k)
        var info: blasint = 0
        var iwork = [blasint](repeating: 0, count: 8 * k)
        var query: Float = 0
        var lwork: blasint = -1
        let jobz: CChar = CChar(UInt8(ascii: "S"))
        withUnsafePointer(to: jobz) { job in
            sgesdd_(job, &rows, &cols, a.data, &lda, &s, vt.data, &ldu, u.data, &ldvt, &query, &lwork, &iwork, &info, 1)
        }
        guard info == 0 else { throw LoRAKitError("SVD of a [\(m), \(n)] matrix: LAPACK sgesdd workspace query failed (info \(info))") }
        lwork = blasint(query)
        var work = [Float](repeating: 0, count: max(1, Int(lwork)))
        withUnsafePointer(to: jobz) { job in
            sgesdd_(job, &rows, &cols, a.data, &lda, &s, vt.data, &ldu, u.data, &ldvt, &work, &lwork, &iwork, &info, 1)
        }
        guard info == 0 else {
            throw LoRAKitError("SVD of a [\(m), \(n)] matrix did not converge (LAPACK sgesdd info \(info)); does the weight hold NaN or Inf?")
        }
        return (u, s, vt)
    }
}
