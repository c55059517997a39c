/// bitsandbytes' signed dynamic 8-bit data type (`create_dynamic_map(signed=True)`), the code book of the
/// double quantization of NF4 block scales.
///
/// For exponent i in 0..<7 it takes the midpoints of `linspace(0.1, 1, 2^i + 1)`, scales them by 10^(i−6), with both
/// signs; adds 0 and 1; sorts: 127 · 2 + 2 = 256 codes, dense near 0. `torch.linspace` on the CPU computes
/// `start + step·k` for the first half and `end − step·(n−1−k)` for the rest, with fused multiply-adds in F32; the
/// same operations here give the same bits (checked against the map written by scripts/make_nf4_fixtures.py).
public enum DynamicMap {
    /// The 256 codes, ascending.
    public static let signed: [Float] = {
        var data: [Float] = []
        for i in 0..<7 {
            let n = (1 << i) + 1
            let start: Float = 0.1, end: Float = 1
            let step = (end - start) / Float(n - 1)
            let boundaries = (0..<n).map { k in
                k < n / 2 ? start.addingProduct(step, Float(k)) : end.addingProduct(-step, Float(n - 1 - k))
            }
            let scale = Float(pow10(i - 6))
            let means = (0..<(n - 1)).map { (boundaries[$0] + boundaries[$0 + 1]) / 2 }
            data += means.map { scale * $0 }
            data += means.map { -scale * $0 }
        }
        data += [0, 1]
        return data.sorted()
    }()

    /// 10^e as Python evaluates `10 ** e` (a correctly rounded double for e < 0).
    private static func pow10(_ e: Int) -> Double {
        e >= 0 ? (0..<e).reduce(1.0) { r, _ in r * 10 } : 1 / (0..<(-e)).reduce(1.0) { r, _ in r * 10 }
    }
}
