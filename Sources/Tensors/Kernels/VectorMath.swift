// Small SIMD reductions shared by the kernels.
//
// Swift does not reassociate floating-point sums (there is no -Ofast), so a plain `for` loop reduction runs
// one lane at a time. These helpers keep two 8-lane accumulators instead; their summation order depends
// only on `count`, so every result is deterministic.

typealias Lanes = SIMD8<Float>

@inline(__always)
func loadLanes(_ p: UnsafePointer<Float>, _ i: Int) -> Lanes {
    UnsafeRawPointer(p + i).loadUnaligned(as: Lanes.self)
}

@inline(__always)
func storeLanes(_ v: Lanes, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
    UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: Lanes.self)
}

/// Σ a[i]·b[i] over `count` floats.
@inline(__always)
func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var acc0 = Lanes(), acc1 = Lanes()
    var i = 0
    while i + 16 <= count {
        acc0 += loadLanes(a, i) * loadLanes(b, i)
        acc1 += loadLanes(a, i + 8) * loadLanes(b, i + 8)
        i += 16
    }
    var sum = (acc0 + acc1).sum()
    while i < count { sum += a[i] * b[i]; i += 1 }
    return sum
}

/// max of `count` ≥ 1 floats.
@inline(__always)
func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var best = x[0]
    for i in 1..<max(count, 1) where x[i] > best { best = x[i] }
    return best
}

/// Σ a[i]·b[i]·c[i] over `count` floats.
@inline(__always)
func tripleProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>,
                   count: Int) -> Float {
    var acc0 = Lanes(), acc1 = Lanes()
    var i = 0
    while i + 16 <= count {
        acc0 += loadLanes(a, i) * loadLanes(b, i) * loadLanes(c, i)
        acc1 += loadLanes(a, i + 8) * loadLanes(b, i + 8) * loadLanes(c, i + 8)
        i += 16
    }
    var sum = (acc0 + acc1).sum()
    while i < count { sum += a[i] * b[i] * c[i]; i += 1 }
    return sum
}
