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
}
