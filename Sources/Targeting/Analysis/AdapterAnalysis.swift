import Foundation
import MiniGPT
import Tensors

/// The LoRA paper's §7 analyses of trained adapters.
///
/// - Subspace similarity: φ(A₁, A₂, i, j) = ‖U₁ⁱᵀ U₂ʲ‖²_F / min(i, j), where Uⁱ holds the top-i right-singular
///   vectors of an adapter's A (the directions of the input it reads). 1 means the smaller subspace lies inside the
///   larger, 0 that they are orthogonal.
/// - Amplification: how strongly ΔW = s·B·A amplifies directions already in W: with U, V the top-r singular vectors
///   of ΔW, compare ‖ΔW‖_F with ‖UᵀWV‖_F (W projected onto ΔW's subspace), with W's own top-r directions and with
///   random ones. The factor ‖ΔW‖_F / ‖UᵀWV‖_F is large when ΔW amplifies directions W barely uses.
public enum AdapterAnalysis {
    typealias Matrix = LowRankSVD.Matrix

    static func matrix(_ t: Tensor) -> Matrix {
        Matrix(rows: t.shape[0], cols: t.count / max(1, t.shape[0]), values: t.array.map(Double.init))
    }

    /// Right-singular vectors of A [r, in] as the columns of an [in, r] matrix, by descending singular value.
    static func rightSingularVectors(_ a: Matrix) -> Matrix { LowRankSVD.jacobiSVD(a).v }

    /// φ(i, j) for i in 1...r₁, j in 1...r₂: row i−1, column j−1.
    public static func subspaceSimilarity(_ a1: Tensor, _ a2: Tensor) -> [[Double]] {
        let u1 = rightSingularVectors(matrix(a1)), u2 = rightSingularVectors(matrix(a2))
        let product = u1.transposed * u2          // [r1, r2] of dot products
        let r1 = product.rows, r2 = product.cols
        // Prefix sums of squared entries give every ‖U₁ⁱᵀU₂ʲ‖² at once.
        var prefix = [[Double]](repeating: [Double](repeating: 0, count: r2 + 1), count: r1 + 1)
        for i in 0..<r1 {
            for j in 0..<r2 {
                let x = product[i, j]
                prefix[i + 1][j + 1] = x * x + prefix[i][j + 1] + prefix[i + 1][j] - prefix[i][j]
            }
        }
        return (1...r1).map { i in (1...r2).map { j in prefix[i][j] / Double(min(i, j)) } }
    }

    /// One module's amplification figures.
    public struct Amplification: Codable, Equatable, Sendable {
        public var module: String
        public var rank: Int
        public var deltaNorm: Double             // ‖ΔW‖_F
        public var projectedOnDelta: Double      // ‖UᵀWV‖_F, U, V from ΔW
        public var projectedOnTopW: Double       // the same with W's own top-r singular vectors
        public var projectedOnRandom: Double     // the same with random orthonormal directions
        public var weightNorm: Double            // ‖W‖_F
        public var factor: Double { deltaNorm / max(projectedOnDelta, 1e-30) }
    }

    /// ‖Uᵀ W V‖_F for U [out, r], V [in, r] (columns orthonormal).
    static func projectedNorm(_ w: Matrix, _ u: Matrix, _ v: Matrix) -> Double {
        let p = u.transposed * w * v
        return p.values.reduce(0) { $0 + $1 * $1 }.squareRoot()
    }

    static func normalizeColumns(_ m: Matrix) -> Matrix {
        var out = m
        for c in 0..<m.cols {
            var norm = 0.0
            for r in 0..<m.rows { norm += m[r, c] * m[r, c] }
            norm = norm.squareRoot()
            if norm > 0 { for r in 0..<m.rows { out[r, c] = m[r, c] / norm } }
        }
        return out
    }

    static func randomOrthonormal(rows: Int, cols: Int, rng: inout RandomGenerator) -> Matrix {
        var g = Matrix(rows: rows, cols: cols)
        for i in 0..<g.values.count { g.values[i] = Double(rng.nextNormal()) }
        return LowRankSVD.thinQR(g).q
    }

    /// Amplification of `weight` [out, in] by `adapter`'s ΔW = s·B·A.
    public static func amplification(module: String, adapter: LoRALinear, weight: Tensor, seed: UInt64 = 0)
        -> Amplification {
        let w = matrix(weight)
        var b = matrix(adapter.b)
        let scale = Double(adapter.effectiveScale)
        for i in 0..<b.values.count { b.values[i] *= scale }
        let a = matrix(adapter.a)
        let r = adapter.rank
        let (us, vt) = LowRankSVD.truncated(left: b, right: a, rank: r)   // ΔW ≈ (U·S)(Vᵀ)
        let u = normalizeColumns(us), v = vt.transposed
        let delta = b * a
        let deltaNorm = delta.values.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let svdW = LowRankSVD.jacobiSVD(w)
        var uw = Matrix(rows: w.rows, cols: r), vw = Matrix(rows: w.cols, cols: r)
        for c in 0..<min(r, svdW.s.count) {
            for i in 0..<w.rows { uw[i, c] = svdW.u[i, c] }
            for j in 0..<w.cols { vw[j, c] = svdW.v[j, c] }
        }
        var rng = RandomGenerator(seed: seed)
        let ur = randomOrthonormal(rows: w.rows, cols: r, rng: &rng)
        let vr = randomOrthonormal(rows: w.cols, cols: r, rng: &rng)
        return Amplification(module: module, rank: r, deltaNorm: deltaNorm,
                             projectedOnDelta: projectedNorm(w, u, v), projectedOnTopW: projectedNorm(w, uw, vw),
                             projectedOnRandom: projectedNorm(w, ur, vr),
                             weightNorm: w.values.reduce(0) { $0 + $1 * $1 }.squareRoot())
    }

    /// A heat map of φ(i, j) as SVG: rows i (first adapter), columns j (second), darker is more similar.
    public static func heatMapSVG(_ phi: [[Double]], title: String, rowLabel: String, columnLabel: String) -> String {
        let rows = phi.count, cols = phi.first?.count ?? 0
        let cell = max(4, min(28, 560 / max(1, max(rows, cols))))
        let left = 60, top = 40
        let width = left + cols * cell + 90, height = top + rows * cell + 50
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="20" font-size="13">\(title)</text>

            """
        for i in 0..<rows {
            for j in 0..<cols {
                let v = max(0, min(1, phi[i][j]))
                let shade = Int((1 - v) * 255)
                svg += "<rect x=\"\(left + j * cell)\" y=\"\(top + i * cell)\" width=\"\(cell)\" height=\"\(cell)\" fill=\"rgb(\(shade),\(shade),255)\"/>\n"
            }
        }
        for i in stride(from: 0, to: rows, by: max(1, rows / 8)) {
            svg += "<text x=\"\(left - 4)\" y=\"\(top + i * cell + cell / 2 + 4)\" text-anchor=\"end\">\(i + 1)</text>\n"
        }
        for j in stride(from: 0, to: cols, by: max(1, cols / 8)) {
            svg += "<text x=\"\(left + j * cell + cell / 2)\" y=\"\(top + rows * cell + 14)\" text-anchor=\"middle\">\(j + 1)</text>\n"
        }
        svg += "<text x=\"\(left + cols * cell / 2)\" y=\"\(top + rows * cell + 32)\" text-anchor=\"middle\">j (\(columnLabel))</text>\n"
        svg += "<text x=\"14\" y=\"\(top + rows * cell / 2)\" transform=\"rotate(-90 14 \(top + rows * cell / 2))\" text-anchor=\"middle\">i (\(rowLabel))</text>\n"
        // Legend: 0 (white) to 1 (blue).
        let lx = left + cols * cell + 20
        for k in 0..<10 {
            let shade = Int((1 - Double(k) / 9) * 255)
            svg += "<rect x=\"\(lx)\" y=\"\(top + (9 - k) * 12)\" width=\"14\" height=\"12\" fill=\"rgb(\(shade),\(shade),255)\"/>\n"
        }
        svg += "<text x=\"\(lx + 18)\" y=\"\(top + 10)\">1</text><text x=\"\(lx + 18)\" y=\"\(top + 118)\">0</text>\n"
        return svg + "</svg>\n"
    }
}
