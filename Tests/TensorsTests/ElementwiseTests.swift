import XCTest
@testable import Tensors

final class ElementwiseTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    let count = 150_001  // several parallel chunks and a SIMD tail

    func testAddAndAddInPlaceAndScale() {
        let a = randomTensor([count], seed: 1), b = randomTensor([count], seed: 2)
        let out = nanTensor([count])
        Elementwise.add(out: out.data, a: a.data, b: b.data, count: count)
        for i in 0..<count { XCTAssertEqual(out[i], a[i] + b[i]) }

        let acc = a.clone()
        Elementwise.addInPlace(acc.data, b.data, count: count)
        XCTAssertTrue(bitwiseEqual(acc, out))

        Elementwise.scale(acc.data, count: count, by: -0.5)
        for i in 0..<count { XCTAssertEqual(acc[i], out[i] * -0.5) }
    }

    func testSumOfSquares() {
        let x = randomTensor([count], seed: 3, scale: 3)
        var want: Double = 0
        for i in 0..<count { want += Double(x[i]) * Double(x[i]) }
        let got = Elementwise.sumOfSquares(x.data, count: count)
        print("sumOfSquares \(got), Double loop \(want)")
        XCTAssertEqual(got, want, accuracy: 1e-6 * want)
        XCTAssertEqual(Elementwise.sumOfSquares(x.data, count: 0), 0)
        XCTAssertEqual(Elementwise.sumOfSquares(x.data, count: 3),
                       Double(x[0] * x[0]) + Double(x[1] * x[1]) + Double(x[2] * x[2]), accuracy: 1e-6)
    }
}
