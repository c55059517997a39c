import Foundation
import XCTest
@testable import Tensors

final class RoPETests: XCTestCase {
    override func setUp() { Threads.set(2) }

    /// cos/sin computed by transformers 5.24 / torch 2.15 (`LlamaRotaryEmbedding`, head_dim 64, theta 1e4):
    /// (position, i, cos, sin). Indices 5, 13 and 28 are where an inv_freq computed in Float64 would be one ulp
    /// away from HF's F32 one, which moves the angle at position 4095 by up to 6e-5.
    let reference: [(Int, Int, Float, Float)] = [
        (1, 0, 0.5403023362159729, 0.8414709568023682),
        (1, 5, 0.9720144271850586, 0.23492106795310974),
        (1, 13, 0.9997188448905945, 0.023711513727903366),
        (1, 28, 0.9999999403953552, 0.0003162277862429619),
        (4095, 0, -0.06597599387168884, -0.9978212118148804),
        (4095, 5, -0.9475278258323669, -0.3196733295917511),
        (4095, 13, -0.9606058597564697, 0.277914434671402),
        (4095, 28, 0.2723587155342102, 0.9621958136558533),
    ]

    func testTableMatchesTransformers() {
        let table = RoPETable(headDim: 64, maxPositions: 4096, theta: 10_000)
        for (p, i, c, s) in reference {
            XCTAssertEqual(table.cos[p * 32 + i], c, accuracy: 2e-7, "cos at position \(p), pair \(i)")
            XCTAssertEqual(table.sin[p * 32 + i], s, accuracy: 2e-7, "sin at position \(p), pair \(i)")
        }
    }

    func testForwardIsAComplexRotation() {
        let rows = 6, heads = 3, hd = 8, theta = 10_000.0
        let table = RoPETable(headDim: hd, maxPositions: 128, theta: theta)
        let positions: [Int32] = [0, 1, 2, 37, 99, 127]
        let x = randomTensor([rows, heads * hd], seed: 11)
        let rotated = x.clone()
        positions.withUnsafeBufferPointer {
            RoPE.forward(x: rotated.data, positions: $0.baseAddress!, rows: rows, heads: heads, headDim: hd, table: table)
        }
        // (x[i] + i·x[i + hd/2]) · e^{i·pos·theta^(−2i/hd)}
        let want = Tensor(shape: [rows, heads * hd])
        for r in 0..<rows {
            for h in 0..<heads {
                for i in 0..<hd / 2 {
                    let angle = Double(positions[r]) * pow(theta, -Double(2 * i) / Double(hd))
                    let base = r * heads * hd + h * hd
                    let re = Double(x[base + i]), im = Double(x[base + i + hd / 2])
                    want[base + i] = Float(re * cos(angle) - im * sin(angle))
                    want[base + i + hd / 2] = Float(re * sin(angle) + im * cos(angle))
                }
            }
        }
        checkClose("RoPE forward", rotated, want, tolerance: 2e-5)
    }

    func testGradient() {
        let rows = 5, heads = 2, hd = 6
        let table = RoPETable(headDim: hd, maxPositions: 64, theta: 10_000)
        let positions: [Int32] = [3, 0, 17, 63, 8]
        let x = randomTensor([rows, heads * hd], seed: 12), projector = randomTensor([rows, heads * hd], seed: 13)
        let work = Tensor(shape: [rows, heads * hd])
        positions.withUnsafeBufferPointer { pos in
            func loss() -> Double {
                work.copy(from: x)
                RoPE.forward(x: work.data, positions: pos.baseAddress!, rows: rows, heads: heads, headDim: hd, table: table)
                return projection(work.data, projector.data, count: work.count)
            }
            let dx = projector.clone()
            RoPE.backward(dx: dx.data, positions: pos.baseAddress!, rows: rows, heads: heads, headDim: hd, table: table)
            GradientCheck.check("RoPE dx", input: x, analytic: dx, loss: loss)

            // a rotation: backward undoes forward
            work.copy(from: x)
            RoPE.forward(x: work.data, positions: pos.baseAddress!, rows: rows, heads: heads, headDim: hd, table: table)
            RoPE.backward(dx: work.data, positions: pos.baseAddress!, rows: rows, heads: heads, headDim: hd, table: table)
            checkClose("RoPE backward ∘ forward", work, x, tolerance: 1e-6)
        }
    }
}
