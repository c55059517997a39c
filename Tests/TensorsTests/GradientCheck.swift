import XCTest
@testable import Tensors

// Shared helpers of the kernel tests: random tensors, projections, tensor comparison and the
// finite-difference gradient check.

/// A tensor of `shape` filled with U(-scale, scale) from a fixed seed.
func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    let t = Tensor(shape: shape)
    var rng = RandomGenerator(seed: seed)
    rng.fillUniform(t.data, count: t.count, low: -scale, high: scale)
    return t
}

/// A tensor of `shape` filled with NaN, to prove a kernel writes every element it promises to.
func nanTensor(_ shape: [Int]) -> Tensor {
    let t = Tensor(shape: shape)
    t.data.update(repeating: .nan, count: t.count)
    return t
}

/// Σ out·w in Double: the scalar loss L whose gradient with respect to `out` is w.
func projection(_ out: UnsafePointer<Float>, _ w: UnsafePointer<Float>, count: Int) -> Double {
    var sum: Double = 0
    for i in 0..<count { sum += Double(out[i]) * Double(w[i]) }
    return sum
}

/// Compares two float sequences; fails when max |got − want| > tolerance, and prints the max difference.
func checkClose(_ label: String, _ got: UnsafePointer<Float>, _ want: UnsafePointer<Float>, count: Int,
                tolerance: Float, file: StaticString = #filePath, line: UInt = #line) {
    var worst: Float = 0, worstIndex = 0
    for i in 0..<count {
        let d = abs(got[i] - want[i])
        if !(d <= worst) { worst = d; worstIndex = i }  // also catches NaN
    }
    print("\(label): max abs diff \(worst) at \(worstIndex) of \(count)")
    XCTAssert(worst <= tolerance, "\(label): max abs diff \(worst) at index \(worstIndex) "
        + "(got \(count > 0 ? got[worstIndex] : 0), want \(count > 0 ? want[worstIndex] : 0)) > \(tolerance)",
        file: file, line: line)
}

func checkClose(_ label: String, _ got: Tensor, _ want: Tensor, tolerance: Float,
                file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, want.count, label, file: file, line: line)
    checkClose(label, got.data, want.data, count: min(got.count, want.count), tolerance: tolerance,
               file: file, line: line)
}

/// Bitwise equality of two tensors.
func bitwiseEqual(_ a: Tensor, _ b: Tensor) -> Bool {
    a.count == b.count && (0..<a.count).allSatisfy { a[$0].bitPattern == b[$0].bitPattern }
}

/// Central finite differences against an analytic gradient.
///
/// For each checked element of `input`, L is evaluated at x ± eps (the actual F32 step is used as the
/// denominator), and the check passes when max |analytic − numeric| / max |numeric| < tolerance.
enum GradientCheck {
    static func check(_ label: String, input: Tensor, analytic: Tensor, indices: [Int]? = nil,
                      eps: Float = 1e-2, tolerance: Double = 1e-2,
                      file: StaticString = #filePath, line: UInt = #line, loss: () -> Double) {
        XCTAssertEqual(input.count, analytic.count, "\(label): gradient shape", file: file, line: line)
        let checked = indices ?? Array(0..<input.count)
        var maxError: Double = 0, maxGradient: Double = 0, worstIndex = -1
        for i in checked {
            let saved = input[i]
            let plus = saved + eps, minus = saved - eps
            input[i] = plus
            let lossPlus = loss()
            input[i] = minus
            let lossMinus = loss()
            input[i] = saved
            let numeric = (lossPlus - lossMinus) / (Double(plus) - Double(minus))
            let error = abs(Double(analytic[i]) - numeric)
            maxGradient = max(maxGradient, abs(numeric))
            if !(error <= maxError) { maxError = error; worstIndex = i }
        }
        let relative = maxError / max(maxGradient, 1e-12)
        print("gradient check \(label): \(checked.count) elements, max abs err \(maxError) at \(worstIndex), "
            + "max |grad| \(maxGradient), relative \(relative)")
        XCTAssertGreaterThan(maxGradient, 0, "\(label): the loss does not depend on the input", file: file, line: line)
        XCTAssertLessThan(relative, tolerance, "\(label): analytic and numeric gradients differ (max abs err "
            + "\(maxError) at \(worstIndex), max |grad| \(maxGradient))", file: file, line: line)
    }

    /// `count` distinct indices in 0..<total from a fixed seed (all of them when count >= total).
    static func sample(_ count: Int, of total: Int, seed: UInt64) -> [Int] {
        if count >= total { return Array(0..<total) }
        var rng = RandomGenerator(seed: seed)
        var all = Array(0..<total)
        all.shuffle(using: &rng)
        return Array(all.prefix(count)).sorted()
    }
}

/// Runs `body` with `Threads` set to `n`, restoring the previous count after.
func withThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
    let previous = Threads.count
    Threads.set(n)
    defer { Threads.set(previous) }
    return try body()
}
