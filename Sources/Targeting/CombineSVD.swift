import Foundation

/// Truncated SVD of a low-rank product, in Double, for `lora combine --method svd`.
///
/// The matrix to factor is ΔW = L·R with L [m, k] and R [k, n], k small (the summed ranks). Instead of an
/// O(m·n·min(m,n)) SVD of ΔW, QR-factor both sides (L = Q_L R_L, Rᵀ = Q_R R_R), take the SVD of the small
/// core R_L R_Rᵀ = U S Vᵀ (one-sided Jacobi), and ΔW = (Q_L U) S (Q_R V)ᵀ. Cost O((m + n)·k²).
enum LowRankSVD {
    /// Row-major m×n matrix.
    struct Matrix {
        var rows: Int, cols: Int
        var values: [Double]
        init(rows: Int, cols: Int, values: [Double]? = nil) {
            self.rows = rows; self.cols = cols
            self.values = values ?? [Double](repeating: 0, count: rows * cols)
        }
        subscript(i: Int, j: Int) -> Double {
            get { values[i * cols + j] }
            set { values[i * cols + j] = newValue }
        }
        var transposed: Matrix {
            var t = Matrix(rows: cols, cols: rows)
            for i in 0..<rows { for j in 0..<cols { t[j, i] = self[i, j] } }
            return t
        }
        static func * (a: Matrix, b: Matrix) -> Matrix {
            precondition(a.cols == b.rows)
            var c = Matrix(rows: a.rows, cols: b.cols)
            for i in 0..<a.rows {
                for p in 0..<a.cols {
                    let x = a[i, p]
                    if x == 0 { continue }
                    for j in 0..<b.cols { c.values[i * c.cols + j] += x * b.values[p * b.cols + j] }
                }
            }
            return c
        }
    }

    /// The top `rank` singular triplets of `left · right` as (U·S [m, rank], Vᵀ [rank, n]) — PEFT's B and A.
    /// Missing triplets (rank above the product's rank) are zero.
    static func truncated(left: Matrix, right: Matrix, rank: Int) -> (us: Matrix, vt: Matrix) {
        let (ql, rl) = thinQR(left)                 // [m, p], [p, k]
        let (qr, rr) = thinQR(right.transposed)     // [n, q], [q, k]
        let core = rl * rr.transposed               // [p, q]
        let (u, s, v) = jacobiSVD(core)             // [p, t], [t], [q, t]
        let bigU = ql * u, bigV = qr * v            // [m, t], [n, t]
        var us = Matrix(rows: left.rows, cols: rank), vt = Matrix(rows: rank, cols: right.cols)
        for c in 0..<min(rank, s.count) {
            for i in 0..<left.rows { us[i, c] = bigU[i, c] * s[c] }
            for j in 0..<right.cols { vt[c, j] = bigV[j, c] }
        }
        return (us, vt)
    }

    /// Householder QR: a [m, k] = Q [m, p] · R [p, k], p = min(m, k), Q with orthonormal columns.
    static func thinQR(_ a: Matrix) -> (q: Matrix, r: Matrix) {
        let m = a.rows, k = a.cols, p = min(m, k)
        var r = a
        var reflectors: [[Double]] = []
        for j in 0..<p {
            var v = (j..<m).map { r[$0, j] }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm == 0 { reflectors.append([]); continue }
            v[0] += v[0] >= 0 ? norm : -norm
            let vNorm2 = v.reduce(0) { $0 + $1 * $1 }
            for c in j..<k {
                var dot = 0.0
                for i in 0..<v.count { dot += v[i] * r[j + i, c] }
                let f = 2 * dot / vNorm2
                for i in 0..<v.count { r[j + i, c] -= f * v[i] }
            }
            reflectors.append(v)
        }
        // Q = H_0 H_1 … H_{p-1} applied to the first p columns of the identity.
        var q = Matrix(rows: m, cols: p)
        for i in 0..<p { q[i, i] = 1 }
        for j in stride(from: p - 1, through: 0, by: -1) {
            let v = reflectors[j]
            if v.isEmpty { continue }
            let vNorm2 = v.reduce(0) { $0 + $1 * $1 }
            for c in 0..<p {
                var dot = 0.0
                for i in 0..<v.count { dot += v[i] * q[j + i, c] }
                let f = 2 * dot / vNorm2
                for i in 0..<v.count { q[j + i, c] -= f * v[i] }
            }
        }
        var upper = Matrix(rows: p, cols: k)
        for i in 0..<p { for c in i..<k { upper[i, c] = r[i, c] } }
        return (q, upper)
    }

    /// One-sided Jacobi SVD of a small matrix: a = U diag(s) Vᵀ, s descending, t = min(rows, cols) triplets.
    static func jacobiSVD(_ a: Matrix) -> (u: Matrix, s: [Double], v: Matrix) {
        if a.rows < a.cols {
            let (u, s, v) = jacobiSVD(a.transposed)
            return (v, s, u)
        }
        let m = a.rows, n = a.cols
        var w = a                       // columns converge to U·S
        var v = Matrix(rows: n, cols: n)
        for i in 0..<n { v[i, i] = 1 }
        for _ in 0..<60 {
            var rotated = false
            for p in 0..<n {
                for q in (p + 1)..<max(n, p + 1) {
                    var alpha = 0.0, beta = 0.0, gamma = 0.0
                    for i in 0..<m { alpha += w[i, p] * w[i, p]; beta += w[i, q] * w[i, q]; gamma += w[i, p] * w[i, q] }
                    guard abs(gamma) > 1e-15 * (alpha * beta).squareRoot(), gamma != 0 else { continue }
                    rotated = true
                    let zeta = (beta - alpha) / (2 * gamma)
                    let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot(), s = c * t
                    for i in 0..<m {
                        let x = w[i, p], y = w[i, q]
                        w[i, p] = c * x - s * y; w[i, q] = s * x + c * y
                    }
                    for i in 0..<n {
                        let x = v[i, p], y = v[i, q]
                        v[i, p] = c * x - s * y; v[i, q] = s * x + c * y
                    }
                }
            }
            if !rotated { break }
        }
        let norms = (0..<n).map { j in (0..<m).reduce(0.0) { $0 + w[$1, j] * w[$1, j] }.squareRoot() }
        let order = (0..<n).sorted { norms[$0] > norms[$1] }
        var u = Matrix(rows: m, cols: n), sortedV = Matrix(rows: n, cols: n)
        for (c, j) in order.enumerated() {
            for i in 0..<m { u[i, c] = norms[j] > 0 ? w[i, j] / norms[j] : 0 }
            for i in 0..<n { sortedV[i, c] = v[i, j] }
        }
        return (u, order.map { norms[$0] }, sortedV)
    }
}
