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

    /// The top `rank` singular triplets of `matrix` (m, n) by randomized subspace iteration (Halko, Martinsson and
    /// Tropp 2011, Algorithm 4.4, as `torch.svd_lowrank` behind PEFT's `init_lora_weights="pissa_niter_K"`): a
    /// Gaussian sketch W·Ω, `powerIterations` rounds of Wᵀ and W products with re-orthonormalisation, then the exact
    /// SVD of the small projection Qᵀ·W. The sketch has `oversampling` more columns than the rank (Halko §4.2;
    /// PEFT sketches exactly r, which leaves the last kept triplets far off unless the spectrum falls steeply), and
    /// the leading `rank` triplets are kept: U (m, rank), S descending, Vᵀ (rank, n). The sketch comes from `rng`,
    /// so a seed gives the same bits. Approximate: closer to `thin`'s leading triplets the faster the spectrum decays
    /// and the more iterations.
    public static func randomized(_ matrix: Tensor, rank: Int, powerIterations: Int, oversampling: Int = 8,
                                  rng: inout RandomGenerator) throws -> (u: Tensor, s: [Float], vt: Tensor) {
        precondition(matrix.shape.count == 2, "SVD.randomized: a matrix is 2-D, got \(matrix.shape)")
        let m = matrix.shape[0], n = matrix.shape[1], q = min(rank + max(0, oversampling), min(m, n))
        precondition(rank >= 1 && rank <= min(m, n) && powerIterations >= 0, "SVD.randomized: rank \(rank) of a [\(m), \(n)] matrix")
        let w = matrix.data
        // The bases are kept transposed, one basis vector per row: Qᵀ (q, m) and Zᵀ (q, n).
        let omegaT = Tensor(shape: [q, n])
        rng.fillNormal(omegaT.data, count: omegaT.count, std: 1)
        let qT = Tensor(shape: [q, m]), zT = Tensor(shape: [q, n])
        // Qᵀ = orth((W Ω)ᵀ) = orth(Ωᵀ Wᵀ)
        GEMM.sgemm(transA: false, transB: true, m: q, n: m, k: n, a: omegaT.data, lda: n, b: w, ldb: n,
                   beta: 0, c: qT.data, ldc: m)
        orthonormalizeRows(qT.data, rows: q, length: m)
        for _ in 0..<powerIterations {
            // Zᵀ = orth((Wᵀ Q)ᵀ) = orth(Qᵀ W), then Qᵀ = orth(Zᵀ Wᵀ)
            GEMM.sgemm(transA: false, transB: false, m: q, n: n, k: m, a: qT.data, lda: m, b: w, ldb: n,
                       beta: 0, c: zT.data, ldc: n)
            orthonormalizeRows(zT.data, rows: q, length: n)
            GEMM.sgemm(transA: false, transB: true, m: q, n: m, k: n, a: zT.data, lda: n, b: w, ldb: n,
                       beta: 0, c: qT.data, ldc: m)
            orthonormalizeRows(qT.data, rows: q, length: m)
        }
        // Qᵀ W (q, n) = Ũ S Vᵀ exactly; W ≈ Q Qᵀ W = (Q Ũ) S Vᵀ
        let projected = Tensor(shape: [q, n])
        GEMM.sgemm(transA: false, transB: false, m: q, n: n, k: m, a: qT.data, lda: m, b: w, ldb: n,
                   beta: 0, c: projected.data, ldc: n)
        let (small, s, vt) = try thin(projected)
        // U (m, rank) = Q (m, q) · Ũ[:, :rank] = (Qᵀ)ᵀ Ũ, and the leading rank rows of Vᵀ
        let u = Tensor(shape: [m, rank])
        GEMM.sgemm(transA: true, transB: false, m: m, n: rank, k: q, a: qT.data, lda: m, b: small.data, ldb: q,
                   beta: 0, c: u.data, ldc: rank)
        let leading = Tensor(shape: [rank, n])
        leading.data.update(from: vt.data, count: rank * n)
        return (u, Array(s.prefix(rank)), leading)
    }

    /// Makes the `rows` vectors of `length` floats orthonormal in place: modified Gram–Schmidt in Double, run twice
    /// (one pass loses orthogonality when the vectors are nearly dependent, as a power iteration makes them). A
    /// vector left with no length (the matrix has lower rank) becomes zero.
    static func orthonormalizeRows(_ v: UnsafeMutablePointer<Float>, rows: Int, length: Int) {
        var x = [Double](repeating: 0, count: rows * length)
        for i in 0..<rows * length { x[i] = Double(v[i]) }
        // the size of the vectors before any projection, to tell a vector that is gone from one that is short
        let scale = (0..<rows * length).reduce(0.0) { max($0, abs(x[$1])) }
        for _ in 0..<2 {
            for i in 0..<rows {
                for j in 0..<i {
                    var dot = 0.0
                    for t in 0..<length { dot += x[i * length + t] * x[j * length + t] }
                    for t in 0..<length { x[i * length + t] -= dot * x[j * length + t] }
                }
                var norm = 0.0
                for t in 0..<length { norm += x[i * length + t] * x[i * length + t] }
                norm = norm.squareRoot()
                let gone = !(norm > 1e-10 * max(scale, 1e-30))
                for t in 0..<length { x[i * length + t] = gone ? 0 : x[i * length + t] / norm }
            }
        }
        for i in 0..<rows * length { v[i] = Float(x[i]) }
    }
}
