import Foundation
import InstructionTuning
import XCTest

final class EvaluationComparisonTests: XCTestCase {
    private func report(_ exact: Double, _ loss: Double, count: Int, groups: [String: EvaluationReport]? = nil) -> EvaluationReport {
        EvaluationReport(loss: loss, perplexity: exp(loss), exactMatch: exact, count: count, tokens: count * 3,
                         examples: [], groups: groups)
    }

    func testTableShowsEachGroupAndTheDifference() throws {
        let base = report(0.5, 2.0, count: 4, groups: ["old": report(1, 0.5, count: 2), "new": report(0, 3.5, count: 2)])
        let tuned = report(1, 0.4, count: 4, groups: ["old": report(1, 0.45, count: 2), "new": report(1, 0.35, count: 2)])
        let lines = try EvaluationComparison.table(baseline: base, current: tuned)
        XCTAssertEqual(lines.count, 4)
        XCTAssertTrue(lines[1].hasPrefix("new ") && lines[1].contains("0.000 →  1.000 (+1.000)"), lines[1])
        XCTAssertTrue(lines[2].hasPrefix("old ") && lines[2].contains("(+0.000)"), lines[2])
        XCTAssertTrue(lines[3].hasPrefix("all ") && lines[3].contains("0.500 →  1.000 (+0.500)")
                      && lines[3].contains("2.0000 →  0.4000"), lines[3])
    }

    func testRefusesReportsOfDifferentData() {
        XCTAssertThrowsError(try EvaluationComparison.table(baseline: report(0, 1, count: 3), current: report(0, 1, count: 4))) {
            XCTAssertTrue("\($0)".contains("3 records") && "\($0)".contains("4"), "\($0)")
        }
    }

    func testReadsItsOwnJSONAndNamesABadFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cmp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let good = directory.appendingPathComponent("base.json").path
        try JSONEncoder().encode(report(0.25, 1.5, count: 8)).write(to: URL(fileURLWithPath: good))
        XCTAssertEqual(try EvaluationComparison.loadReport(path: good).exactMatch, 0.25)

        let bad = directory.appendingPathComponent("bad.json").path
        try Data(#"{"loss": 1}"#.utf8).write(to: URL(fileURLWithPath: bad))
        XCTAssertThrowsError(try EvaluationComparison.loadReport(path: bad)) {
            XCTAssertTrue("\($0)".contains("bad.json") && "\($0)".contains("no \""), "\($0)")
        }
        XCTAssertThrowsError(try EvaluationComparison.loadReport(path: directory.appendingPathComponent("none.json").path)) {
            XCTAssertTrue("\($0)".contains("none.json"), "\($0)")
        }
    }
}
