/// A frozen weight matrix in 4-bit NormalFloat (NF4), as QLoRA and bitsandbytes store it.
///
/// The row-major `[rows, columns]` matrix (a projection's `[out, in]`) is read as one flat sequence and cut into
/// blocks of 64 consecutive values (a block may span two rows; the last one may be short). Each value becomes the
/// index of the nearest of the 16 NF4 codes after scaling by its block's absmax; two indices share a byte, the
/// first in the high nibble. With double quantization (bitsandbytes' `compress_statistics`, on by default) the
/// F32 absmax values are stored as 8-bit codes too: their mean is subtracted, and the differences are quantized
/// with bitsandbytes' dynamic map (`DynamicMap.signed`) in blocks of 256, each with an F32 absmax.
///
/// Cost: 4 bits per weight plus 32/64 = 0.5 bits of scale (0.127 with double quantization) — 12.9 % of F32 with
/// double quantization, 14.1 % without. Dequantized values are bit-identical to bitsandbytes' reference kernels
/// (`code[index] · absmax` in F32; with double quantization `absmax = dyn[q] · absmax₂ + offset`, two F32 roundings).
public final class NF4Matrix: @unchecked Sendable {
    /// The 16 NF4 codes (QLoRA, appendix E; bitsandbytes `get_4bit_type("nf4")`), ascending.
    public static let codeBook: [Float] = [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ]
    /// Values per NF4 block.
    public static let blockSize = 64
    /// Block scales per block of the double quantization.
    public static let scaleBlockSize = 256

    public let rows: Int
    public let columns: Int
    public var count: Int { rows * columns }
    /// Two 4-bit code indices per byte, element 2i in the high nibble; (count + 1) / 2 bytes.
    public let packedCodes: [UInt8]
    /// How the per-block absmax values are kept.
    public let scales: Scales

    /// The absmax of each block of 64: plain F32, or double-quantized.
    public enum Scales: Sendable {
        case f32([Float])
        /// `codes[b]` indexes `DynamicMap.signed`; `absmax[b / 256]` scales it; `offset` (the mean absmax) is added.
        case doubleQuantized(codes: [UInt8], absmax: [Float], offset: Float)
    }

    /// Quantizes `values`, a row-major `[rows, columns]` matrix; `label` names it in errors (a tensor name).
    ///
    /// Throws when a value is NaN or infinite.
    public init(quantizing values: UnsafePointer<Float>, rows: Int, columns: Int, doubleQuant: Bool = true,
                label: String) throws {
        precondition(rows >= 0 && columns >= 0, "negative matrix size")
        self.rows = rows
        self.columns = columns
        let count = rows * columns
        var packed = [UInt8](repeating: 0, count: (count + 1) / 2)
        let absmax = try packed.withUnsafeMutableBufferPointer { bytes in
            try BlockwiseQuantizer.quantize(values, count: count, blockSize: Self.blockSize, codeBook: Self.codeBook,
                                            label: label) { i, code in
                // element 2j → high nibble of byte j, element 2j+1 → low nibble (an odd count leaves the last low 0)
                bytes[i >> 1] |= i & 1 == 0 ? code << 4 : code
            }
        }
        packedCodes = packed
        guard doubleQuant, !absmax.isEmpty else { scales = .f32(absmax); return }
        // The offset is the mean in double precision, summed in order (bitsandbytes takes torch's F32 mean: the
        // two agree to about an ulp, and the offset is stored, so dequantization stays exact either way).
        let offset = Float(absmax.reduce(0.0) { $0 + Double($1) } / Double(absmax.count))
        let centred = absmax.map { $0 - offset }
        var codes = [UInt8](repeating: 0, count: absmax.count)
        let secondLevel = try centred.withUnsafeBufferPointer { c in
            try BlockwiseQuantizer.quantize(c.baseAddress!, count: c.count, blockSize: Self.scaleBlockSize,
                                            codeBook: DynamicMap.signed, label: label + " (block scales)") { i, code in
                codes[i] = code
            }
        }
        scales = .doubleQuantized(codes: codes, absmax: secondLevel, offset: offset)
    }

    /// Quantizes a `[rows, columns]` tensor.
    public convenience init(quantizing tensor: Tensor, doubleQuant: Bool = true, label: String) throws {
        try self.init(quantizing: tensor.data, rows: tensor.rows, columns: tensor.columns, doubleQuant: doubleQuant,
                      label: label)
    }

    /// Number of NF4 blocks.
    public var blockCount: Int { (count + Self.blockSize - 1) / Self.blockSize }

    /// The dequantized absmax of block `b` (what multiplies its codes).
    @inline(__always)
    public func blockScale(_ b: Int) -> Float {
        switch scales {
        case .f32(let absmax): return absmax[b]
        case .doubleQuantized(let codes, let absmax, let offset):
            // two roundings, as bitsandbytes: dequantize_blockwise, then `absmax += offset`
            let scaled = DynamicMap.signed[Int(codes[b])] * absmax[b / Self.scaleBlockSize]
            return scaled + offset
        }
    }

    /// The code index (0..<16) of element `i` of the flat matrix.
    public func codeIndex(_ i: Int) -> UInt8 {
        let byte = packedCodes[i >> 1]
        return i & 1 == 0 ? byte >> 4 : byte & 0x0F
    }

    /// Bytes this matrix occupies: packed codes and scales (F32 absmax, or 8-bit codes plus second-level F32 absmax
    /// and the offset).
    public var storageBytes: Int {
        let scaleBytes: Int
        switch scales {
        case .f32(let absmax): scaleBytes = 4 * absmax.count
        case .doubleQuantized(let codes, let absmax, _): scaleBytes = codes.count + 4 * absmax.count + 4
        }
        return packedCodes.count + scaleBytes
    }

    /// panel[r · ldPanel + c] = W[rowRange.lowerBound + r, columnRange.lowerBound + c], dequantized.
    ///
    /// Walks each row's elements block by block, so a block's scale is computed once per row segment, and decodes
    /// whole bytes (two elements) where the segment is byte-aligned. Reads only codes of the requested elements.
    public func dequantize(rows rowRange: Range<Int>, columns columnRange: Range<Int>,
                           into panel: UnsafeMutablePointer<Float>, ldPanel: Int) {
        precondition(rowRange.lowerBound >= 0 && rowRange.upperBound <= rows
                     && columnRange.lowerBound >= 0 && columnRange.upperBound <= columns, "dequantize: range outside the matrix")
        let width = columnRange.count
        if width == 0 { return }
        Self.codeBook.withUnsafeBufferPointer { table in
            packedCodes.withUnsafeBufferPointer { bytes in
                for r in rowRange {
                    let out = panel + (r - rowRange.lowerBound) * ldPanel
                    var e = r * columns + columnRange.lowerBound
                    let end = e + width
                    var o = 0
                    while e < end {
                        let block = e / Self.blockSize
                        let segmentEnd = min(end, (block + 1) * Self.blockSize)
                        let scale = blockScale(block)
                        if e & 1 == 1 {   // odd start: the low nibble of a byte
                            out[o] = table[Int(bytes[e >> 1] & 0x0F)] * scale
                            e += 1; o += 1
                        }
                        while e + 1 < segmentEnd {   // whole bytes
                            let byte = bytes[e >> 1]
                            out[o] = table[Int(byte >> 4)] * scale
                            out[o + 1] = table[Int(byte & 0x0F)] * scale
                            e += 2; o += 2
                        }
                        if e < segmentEnd {   // a lone high nibble at the segment's end
                            out[o] = table[Int(bytes[e >> 1] >> 4)] * scale
                            e += 1; o += 1
                        }
                    }
                }
            }
        }
    }

    /// The whole matrix dequantized to a new `[rows, columns]` tensor (for tests, merging and export; the model's
    /// products dequantize tiles instead).
    public func dequantized() -> Tensor {
        let t = Tensor(shape: [rows, columns])
        dequantize(rows: 0..<rows, columns: 0..<columns, into: t.data, ldPanel: columns)
        return t
    }
}
