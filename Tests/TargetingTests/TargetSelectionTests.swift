import MiniGPT
import Targeting
import Tensors
import XCTest

final class TargetSelectionTests: XCTestCase {
    func testTargetsInEveryForm() throws {
        XCTAssertEqual(try TargetSelection.parseTargets("q,k,v,o,gate,up,down"), Projection.allCases)
        XCTAssertEqual(try TargetSelection.parseTargets("attn"), [.q, .k, .v, .o])
        XCTAssertEqual(try TargetSelection.parseTargets("ffn"), [.gate, .up, .down])
        XCTAssertEqual(try TargetSelection.parseTargets("all"), Projection.allCases)
        XCTAssertEqual(try TargetSelection.parseTargets("q_proj,v_proj"), [.q, .v])
        XCTAssertEqual(try TargetSelection.parseTargets("gate_proj, up_proj, down_proj"), [.gate, .up, .down])
        // Mixed forms, spaces, duplicates and any order give the canonical order.
        XCTAssertEqual(try TargetSelection.parseTargets(" down, q_proj  v , q,ffn "), [.q, .v, .gate, .up, .down])
        XCTAssertEqual(try TargetSelection.parseTargets("ffn,attn"), Projection.allCases)
        XCTAssertEqual(try TargetSelection.parseTargets("v,v,v"), [.v])
        XCTAssertEqual(try TargetSelection.parseTargets("Q,V_PROJ"), [.q, .v])
    }

    func testUnknownTargetsAreErrors() {
        assertError(["unknown target 'x': valid targets are q, k, v, o, gate, up, down, attn, ffn, all (or q_proj … down_proj)"]) {
            try TargetSelection.parseTargets("q,x")
        }
        assertError(["unknown target 'lm_head'"]) { try TargetSelection.parseTargets("lm_head") }
        assertError(["unknown target 'qproj'"]) { try TargetSelection.parseTargets("qproj") }
        assertError(["no targets given"]) { try TargetSelection.parseTargets(" , ") }
    }

    func testLayersInEveryForm() throws {
        XCTAssertEqual(try TargetSelection.parseLayers(nil, layerCount: 4), [0, 1, 2, 3])
        XCTAssertEqual(try TargetSelection.parseLayers("all", layerCount: 3), [0, 1, 2])
        XCTAssertEqual(try TargetSelection.parseLayers("0-3,7", layerCount: 8), [0, 1, 2, 3, 7])
        XCTAssertEqual(try TargetSelection.parseLayers("last:4", layerCount: 10), [6, 7, 8, 9])
        XCTAssertEqual(try TargetSelection.parseLayers("5, 1-2, 2, last:1", layerCount: 8), [1, 2, 5, 7])
        XCTAssertEqual(try TargetSelection.parseLayers("3-3", layerCount: 4), [3])
        XCTAssertEqual(try TargetSelection.parseLayers("last:2", layerCount: 2), [0, 1])
    }

    func testBadLayersAreErrors() {
        assertError(["'8'", "out of range", "8 layers (0-7)"]) { try TargetSelection.parseLayers("0,8", layerCount: 8) }
        assertError(["'2-9'", "out of range", "4 layers"]) { try TargetSelection.parseLayers("2-9", layerCount: 4) }
        assertError(["'3-1'", "empty range"]) { try TargetSelection.parseLayers("3-1", layerCount: 4) }
        assertError(["'a'", "not a layer index", "4 layers"]) { try TargetSelection.parseLayers("a", layerCount: 4) }
        assertError(["'-1'"]) { try TargetSelection.parseLayers("-1", layerCount: 4) }
        assertError(["'last:0'"]) { try TargetSelection.parseLayers("last:0", layerCount: 4) }
        assertError(["'last:5'", "more layers than exist", "4 layers"]) { try TargetSelection.parseLayers("last:5", layerCount: 4) }
        assertError(["'last:x'"]) { try TargetSelection.parseLayers("last:x", layerCount: 4) }
        assertError(["is empty"]) { try TargetSelection.parseLayers("1,", layerCount: 4) }
        assertError(["is empty"]) { try TargetSelection.parseLayers("", layerCount: 4) }
    }
}
