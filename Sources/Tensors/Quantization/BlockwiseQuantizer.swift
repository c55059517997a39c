/// Blockwise absmax quantization against a code book, as bitsandbytes' reference ("default") kernels do it.
///
/// The values are cut into blocks of `blockSize` consecutive elements (the last block may be shorter and is scaled
/// by the absmax of the values it has: nothing past `count` is read). Each value is scaled by
/// `x · (1 / absmax)` in F32, clamped to [−1, 1], and replaced by the index of the nearest code
/// (`argmin |scaled − code|` in F32; a tie goes to the lower index, as `torch.argmin`).
///
/// One deviation, for blocks bitsandbytes turns into NaN: a block whose absmax is 0 (all zeros), or so small that
/// its reciprocal overflows, is scaled by division instead, so zeros map to the code nearest 0 and dequantize to 0.
enum BlockwiseQuantizer {
    /// Quantizes `values[0..<count]`; `store(i, code)` receives element i's code index. Returns the absmax per block.
    ///
    /// Throws when a value is NaN or infinite (its block would have no finite scale); `label` names the tensor.
    static func quantize(_ values: UnsafePointer<Float>, count: Int, blockSize: Int, codeBook: [Float],
                         label: String, store: (Int, UInt8) -> Void) throws -> [Float] {
        let blocks = (count + blockSize - 1) / blockSize
        var absmax = [Float](repeating: 0, count: blocks)
        try codeBook.withUnsafeBufferPointer { codes in
            for b in 0..<blocks {
                let lo = b * blockSize, hi = min(count, lo + blockSize)
                var m: Float = 0
                for i in lo..<hi {
                    let a = abs(values[i])
                    guard a.isFinite else {
                        throw LoRAKitError("\(label): element \(i) is \(values[i]); only finite weights can be quantized")
                    }
                    m = max(m, a)
                }
                absmax[b] = m
                let inverse = 1 / m
                let divide = !inverse.isFinite
                for i in lo..<hi {
                    let x = values[i]
                    let scaled = divide ? (m > 0 ? x / m : 0) : x * inverse
                    store(i, nearest(min(max(scaled, -1), 1), codes))
                }
            }
        }
        return absmax
    }

    /// Index of the code nearest `x` (first one on a tie).
    @inline(__always)
    static func nearest(_ x: Float, _ codes: UnsafeBufferPointer<Float>) -> UInt8 {
        var best = 0
        var bestDistance = abs(x - codes[0])
        for j in 1..<codes.count {
            let d = abs(x - codes[j])
            if d < bestDistance { bestDistance = d; best = j }
        }
        return UInt8(best)
    }
}
