import Tensors
import XCTest

/// LAPACK's sgesdd through `SVD.thin`: the factors rebuild the matrix, are orthonormal, and S descends.
final class SVDTests: XCTestCase {
    func check(rows m: Int, cols n: Int) throws {
        var rng = RandomGenerator(seed: UInt64(10 * m + n))
        let a = Tensor(shape: [m, n])
        rng.fillNormal(a.data, count: a.count, std: 1)
        let (u, s, vt) = try SVD.thin(a)
        let k = min(m, n)
        XCTAssertEqual(u.shape, [m, k]); XCTAssertEqual(vt.shape, [k, n]); XCTAssertEqual(s.count, k)
        for j in 1..<k { XCTAssertGreaterThanOrEqual(s[j - 1], s[j]) }
        XCTAssertGreaterThan(s[k - 1], 0)
        for i in 0..<m {
            for j in 0..<n {
                var value: Float = 0
                for c in 0..<k { value += u[i * k + c] * s[c] * vt[c * n + j] }
                XCTAssertEqual(value, a[i * n + j], accuracy: 1e-4, "[\(i), \(j)]")
            }
        }
        for c in 0..<k {
            for d in 0..<k {
                var uu: Float = 0, vv: Float = 0
                for i in 0..<m { uu += u[i * k + c] * u[i * k + d] }
                for j in 0..<n { vv += vt[c * n + j] * vt[d * n + j] }
                XCTAssertEqual(uu, c == d ? 1 : 0, accuracy: 1e-4)
                XCTAssertEqual(vv, c == d ? 1 : 0, accuracy: 1e-4)
            }
        }
    }

    func testTallAndWideMatrices() throws {
        try check(rows: 7, cols: 5)
        try check(rows: 5, cols: 7)
        try check(rows: 6, cols: 6)
    }

    /// The randomized SVD of PiSSA's `pissa_niter_K` on a matrix whose spectrum decays (σᵢ = 0.6ⁱ): the leading
    /// singular values and the rank-r product U·S·Vᵀ are those of the exact SVD, U and V are orthonormal, a seed
    /// gives the same bits, and power iterations make it more accurate.
    func testRandomizedSVDFindsTheLeadingTriplets() throws {
        let m = 70, n = 45, r = 5
        var rng = RandomGenerator(seed: 3)
        let noise = Tensor(shape: [m, n])
        rng.fillNormal(noise.data, count: noise.count, std: 1)
        let (u0, _, vt0) = try SVD.thin(noise)
        let k = min(m, n)
        let a = Tensor(shape: [m, n])
        for i in 0..<m {
            for j in 0..<n {
                var value: Float = 0
                for c in 0..<k { value += u0[i * k + c] * Float(pow(0.6, Double(c))) * vt0[c * n + j] }
                a[i * n + j] = value
            }
        }
        let (_, exactS, _) = try SVD.thin(a)
        func rankR(_ u: Tensor, _ s: [Float], _ vt: Tensor) -> [Float] {
            let columns = u.shape[1]
            return (0..<m * n).map { e in
                (0..<r).reduce(Float(0)) { $0 + u[e / n * columns + $1] * s[$1] * vt[$1 * n + e % n] }
            }
        }
        let (ue, se, vte) = try SVD.thin(a)
        let exact = rankR(ue, se, vte)
        var errors: [Float] = []
        for iterations in [0, 2] {
            var sketch = RandomGenerator(seed: 9)
            let (u, s, vt) = try SVD.randomized(a, rank: r, powerIterations: iterations, rng: &sketch)
            XCTAssertEqual(u.shape, [m, r]); XCTAssertEqual(vt.shape, [r, n]); XCTAssertEqual(s.count, r)
            for j in 0..<r { XCTAssertEqual(s[j], exactS[j], accuracy: 1e-3 * exactS[j], "σ\(j), \(iterations) iterations") }
            for c in 0..<r {
                for d in 0..<r {
                    let uu = (0..<m).reduce(Float(0)) { $0 + u[$1 * r + c] * u[$1 * r + d] }
                    let vv = (0..<n).reduce(Float(0)) { $0 + vt[c * n + $1] * vt[d * n + $1] }
                    XCTAssertEqual(uu, c == d ? 1 : 0, accuracy: 1e-4)
                    XCTAssertEqual(vv, c == d ? 1 : 0, accuracy: 1e-4)
                }
            }
            let approximate = rankR(u, s, vt)
            errors.append(zip(approximate, exact).map { abs($0 - $1) }.max() ?? 0)
            var again = RandomGenerator(seed: 9)
            let repeated = try SVD.randomized(a, rank: r, powerIterations: iterations, rng: &again)
            XCTAssertEqual(repeated.u.array, u.array)
            XCTAssertEqual(repeated.s, s)
        }
        print("randomized SVD, max |rank-\(r) product − exact|: \(errors[0]) (0 iterations), \(errors[1]) (2)")
        XCTAssertLessThan(errors[1], 1e-3)
        XCTAssertLessThan(errors[1], errors[0])
    }
}
