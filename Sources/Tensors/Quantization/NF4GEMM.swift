import Foundation

/// Matrix products with an NF4 weight: tiles of W are dequantized into F32 panels and multiplied by `cblas_sgemm`.
///
/// No dequantized copy of W outlives a call: each thread owns one panel of at most `panelFloats` values (reused
/// across calls, see `NF4Workspace`) and walks its share of W through it tile by tile. The forward splits W's rows
/// (the output features) over the threads, the input gradient splits W's columns (the input features), so threads
/// write disjoint parts of the result and every tile is dequantized once. The split depends only on the sizes and
/// `Threads.count`: results are deterministic.
public enum NF4GEMM {
    /// Floats per thread panel (2 MiB): a tile is this many values of W, at least 16 rows. (Tests shrink it to
    /// exercise many tiles on small matrices.)
    nonisolated(unsafe) static var panelFloats = 1 << 19

    /// out[rows, outF] (+)= input[rows, inF] · W[outF, inF]ᵀ — a linear layer's forward with an NF4 weight.
    public static func linear(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, weight: NF4Matrix,
                              rows: Int, accumulate: Bool = false) {
        let outF = weight.rows, inF = weight.columns
        if rows == 0 || outF == 0 { return }
        let parts = partCount(rows: rows, weight: weight, splitting: outF)
        let tileRows = max(16, min(outF, panelFloats / max(1, inF)))
        NF4Workspace.shared.withPanels(parts, floats: tileRows * inF) { panels in
            run(parts) { part in
                let (lo, hi) = split(outF, part: part, of: parts)
                let panel = panels[part]
                var r0 = lo
                while r0 < hi {
                    let r1 = min(hi, r0 + tileRows)
                    // panel (r1−r0, inF) = W[r0..<r1, :];  out[:, r0..<r1] (+)= input · panelᵀ
                    weight.dequantize(rows: r0..<r1, columns: 0..<inF, into: panel, ldPanel: inF)
                    GEMM.sgemmSerial(transA: false, transB: true, m: rows, n: r1 - r0, k: inF,
                                     a: input, lda: inF, b: panel, ldb: inF,
                                     beta: accumulate ? 1 : 0, c: out + r0, ldc: outF)
                    r0 = r1
                }
            }
        }
    }

    /// dInput[rows, inF] (+)= dOut[rows, outF] · W[outF, inF] — the gradient through an NF4 linear layer.
    public static func linearBackwardInput(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                           weight: NF4Matrix, rows: Int, accumulate: Bool = true) {
        let outF = weight.rows, inF = weight.columns
        if rows == 0 || inF == 0 { return }
        if outF == 0 {
            if !accumulate { for r in 0..<rows { (dInput + r * inF).update(repeating: 0, count: inF) } }
            return
        }
        let parts = partCount(rows: rows, weight: weight, splitting: inF)
        var maxWidth = 0
        for part in 0..<parts { let (c0, c1) = split(inF, part: part, of: parts); maxWidth = max(maxWidth, c1 - c0) }
        let tileRows = max(16, min(outF, panelFloats / max(1, maxWidth)))
        NF4Workspace.shared.withPanels(parts, floats: tileRows * maxWidth) { panels in
            run(parts) { part in
                let (c0, c1) = split(inF, part: part, of: parts)
                if c0 >= c1 { return }
                let panel = panels[part], width = c1 - c0
                var r0 = 0
                while r0 < outF {
                    let r1 = min(outF, r0 + tileRows)
                    // panel (r1−r0, width) = W[r0..<r1, c0..<c1];  dInput[:, c0..<c1] (+)= dOut[:, r0..<r1] · panel
                    weight.dequantize(rows: r0..<r1, columns: c0..<c1, into: panel, ldPanel: width)
                    GEMM.sgemmSerial(transA: false, transB: false, m: rows, n: width, k: r1 - r0,
                                     a: dOut + r0, lda: outF, b: panel, ldb: width,
                                     beta: r0 == 0 && !accumulate ? 0 : 1, c: dInput + c0, ldc: inF)
                    r0 = r1
                }
            }
        }
    }

    /// Threads for a product: one when it is small (as `GEMM.sgemm`) or already inside a parallel loop. The
    /// dequantization counts as work too (it dominates when `rows` is 1, in generation).
    private static func partCount(rows: Int, weight: NF4Matrix, splitting size: Int) -> Int {
        let threads = Threads.count
        let work = weight.count * (rows + 4)
        if threads <= 1 || ParallelRegion.isInside || work < GEMM.splitThreshold { return 1 }
        return max(1, min(threads, size / 16))
    }

    /// Part `part` of `0..<size` cut into `parts` pieces on multiples of 16 (OpenBLAS's register block).
    private static func split(_ size: Int, part: Int, of parts: Int) -> (Int, Int) {
        let blocks = (size + 15) / 16
        return (min(size, blocks * part / parts * 16), min(size, blocks * (part + 1) / parts * 16))
    }

    private static func run(_ parts: Int, _ body: (Int) -> Void) {
        if parts == 1 { body(0) } else { ParallelRegion.run(parts, body) }
    }
}

/// The F32 panels of `NF4GEMM`: one per thread, allocated once, grown when a larger tile comes.
///
/// Calls take a lock for their duration, so concurrent products (not something the model does) take turns
/// instead of sharing panels.
final class NF4Workspace: @unchecked Sendable {
    static let shared = NF4Workspace()

    private let lock = NSLock()
    private var panels: [UnsafeMutablePointer<Float>] = []
    private var capacity = 0

    func withPanels(_ count: Int, floats: Int, _ body: ([UnsafeMutablePointer<Float>]) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        if floats > capacity || count > panels.count {
            for p in panels { p.deallocate() }
            capacity = max(capacity, floats)
            let n = max(count, panels.count)
            panels = (0..<n).map { _ in
                UnsafeMutableRawPointer.allocate(byteCount: max(1, capacity) * MemoryLayout<Float>.stride,
                                                 alignment: 64).bindMemory(to: Float.self, capacity: max(1, capacity))
            }
        }
        body(panels)
    }
}
