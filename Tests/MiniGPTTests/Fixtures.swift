import Checkpoints
import Foundation
import Tensors

/// Paths to the committed fixtures (Tests/Fixtures), found from this file's location.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }

    /// The tensors `scripts/make_model_fixtures.py` recorded from transformers for model `name`.
    static func expected(_ name: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: model(name) + "/expected.safetensors")
    }
}

/// Largest |a − b| over the first `count` values.
func maxAbsDifference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var worst: Float = 0
    for i in 0..<count { worst = max(worst, abs(a[i] - b[i])) }
    return worst
}
