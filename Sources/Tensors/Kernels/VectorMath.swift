// Small SIMD reductions shared by the kernels.
//
// Swift does not reassociate floating-point sums (there is no -Ofast), so a plain `for` loop reduction runs
// one lane at a time. These helpers keep two 8-lane accumulators instead; their summation order depends
// only on `count`, so every result is deterministic.

import CKernels

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

/// max of `count` ≥ 1 floats, eight lanes at a time.
@inline(__always)
func maximumLanes(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var fast: Float = 0
    if lk_maximum(x, count, &fast) == 1 { return fast }   // AVX2 where the CPU has it
    var i = 0
    var best = x[0]
    if count >= 8 {
        var lanes = loadLanes(x, 0)
        i = 8
        while i + 8 <= count {
            let next = loadLanes(x, i)
            lanes = lanes.replacing(with: next, where: lanes .< next)
            i += 8
        }
        best = lanes.max()
    }
    while i < count { best = Swift.max(best, x[i]); i += 1 }
    return best
}

/// e^x per lane, to about 2 ulp: Cody–Waite range reduction x = n·ln2 + r with |r| ≤ ln2/2, a degree-6
/// polynomial for e^r, and 2^n put into the exponent bits. Below −87.3 (where e^x leaves the normal floats) the
/// result is 0; above 88 it saturates at e^88 (softmax passes x − max ≤ 0; a sigmoid's e^−g then gives 1/(1+e^88)
/// ≈ 0 as it should). It replaces libm's scalar `expf`, which softmax and SiLU would call once per value.
@inline(__always)
func expLanes(_ x: Lanes) -> Lanes {
    // (clamped with masks: `pointwiseMin`/`Max` are not inlined into this loop)
    let low = Lanes(repeating: -87.33), high = Lanes(repeating: 88)
    let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
    // n = round(x / ln2): adding 1.5·2²³ rounds to an integer and leaves n in the low mantissa bits
    let magic: Float = 12_582_912
    let shifted = clamped * 1.442_695_04 + magic
    let n = shifted - magic
    // ln 2 split in a part exact in a few bits and the rest, so n·ln2High is exact
    var r = clamped - n * 0.693_359_375
    r = r - n * -2.121_944_4e-4
    // e^r on [−ln2/2, ln2/2] (Cephes expf coefficients)
    var p = Lanes(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_6e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_1e-1
    p = p * (r * r) + r + 1
    // 2^n: bits of `shifted` are 0x4B40_0000 + n; n + 127 in the exponent field
    let exponent = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127
    let scale = unsafeBitCast(exponent &<< 23, to: Lanes.self)
    return (p * scale).replacing(with: 0, where: x .< -87.33)
}

/// e^x for one value, through the same polynomial as `expLanes` (for tails of vector loops).
@inline(__always)
func expScalar(_ x: Float) -> Float { expLanes(Lanes(repeating: x))[0] }

/// x[i] = e^(x[i] − shift) over `count` floats; returns Σ of the new values (lanes of 8 summed per block
/// of 256 in Float, blocks in Double, in an order that depends only on `count`).
@inline(__always) @discardableResult
func exponentiateShifted(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Double {
    // the AVX2 + FMA version of this loop when the CPU has it (the same algorithm, twice the lanes per instruction)
    let fast = lk_exp_shifted(x, count, shift, 1)
    if fast >= 0 { return fast }
    var total: Double = 0
    var i = 0
    let s = Lanes(repeating: shift)
    while i + 8 <= count {
        let end = Swift.min(count, i + 256)
        var acc = Lanes()
        while i + 8 <= end {
            let e = expLanes(loadLanes(x, i) - s)
            storeLanes(e, x, i)
            acc += e
            i += 8
        }
        total += Double(acc.sum())
    }
    while i < count {
        let e = expScalar(x[i] - shift)
        x[i] = e
        total += Double(e)
        i += 1
    }
    return total
}

/// Σ e^(x[i] − shift) over `count` floats, x untouched; the same order and values as `exponentiateShifted`.
@inline(__always)
func sumExponentials(_ x: UnsafePointer<Float>, count: Int, shift: Float) -> Double {
    let fast = lk_exp_shifted(UnsafeMutablePointer(mutating: x), count, shift, 0)   // store 0: x is only read
    if fast >= 0 { return fast }
    var total: Double = 0
    var i = 0
    let s = Lanes(repeating: shift)
    while i + 8 <= count {
        let end = Swift.min(count, i + 256)
        var acc = Lanes()
        while i + 8 <= end {
            acc += expLanes(loadLanes(x, i) - s)
            i += 8
        }
        total += Double(acc.sum())
    }
    while i < count {
        total += Double(expScalar(x[i] - shift))
        i += 1
    }
    return total
}

/// x[i] *= factor over `count` floats.
@inline(__always)
func scaleLanes(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
    if lk_scale(x, count, factor) == 1 { return }   // AVX2 where the CPU has it
    var i = 0
    while i + 8 <= count { storeLanes(loadLanes(x, i) * factor, x, i); i += 8 }
    while i < count { x[i] *= factor; i += 1 }
}
