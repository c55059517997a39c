import Foundation
import XCTest
@testable import Tensors

final class SwiGLUTests: XCTestCase {
    override func setUp() { Threads.set(2) }

    func testForwardMatchesNaive() {
        let count = 40_003  // several parallel chunks, and a tail of 3 after the 8-lane loops
        let gate = randomTensor([count], seed: 1, scale: 6), up = randomTensor([count], seed: 2)
        let out = nanTensor([count])
        SwiGLU.forward(out: out.data, gate: gate.data, up: up.data, count: count)
        let want = Tensor(shape: [count])
        for i in 0..<count {
            let g = Double(gate[i])
            want[i] = Float(g / (1 + exp(-g)) * Double(up[i]))
        }
        checkClose("SwiGLU out", out, want, tolerance: 1e-5)
    }

    func testGradients() {
        let count = 50
        let gate = randomTensor([count], seed: 3, scale: 4), up = randomTensor([count], seed: 4, scale: 2)
        let projector = randomTensor([count], seed: 5)
        let out = Tensor(shape: [count])
        func loss() -> Double {
            SwiGLU.forward(out: out.data, gate: gate.data, up: up.data, count: count)
            return projection(out.data, projector.data, count: count)
        }
        // backward overwrites: NaN in the outputs must not survive
        let dGate = nanTensor([count]), dUp = nanTensor([count])
        SwiGLU.backward(dGate: dGate.data, dUp: dUp.data, dOut: projector.data, gate: gate.data, up: up.data, count: count)
        GradientCheck.check("SwiGLU dGate", input: gate, analytic: dGate, eps: 1e-3, loss: loss)
        GradientCheck.check("SwiGLU dUp", input: up, analytic: dUp, loss: loss)
    }
}
