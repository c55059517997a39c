import Foundation
import XCTest
import Tensors

/// Paths to the committed fixtures (Tests/Fixtures), found from this file's location.
enum DataFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }
}

/// A fresh temporary directory per test for the data pipeline's files, removed afterwards.
class DataTestCase: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "lorakit-data-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Writes `bytes` to `name` in the temporary directory and returns its path.
    @discardableResult
    func write(_ name: String, bytes: [UInt8]) throws -> String {
        let file = directory + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String { try write(name, bytes: Array(text.utf8)) }

    /// Asserts that `body` throws a LoRAKitError whose message contains every fragment; returns the message.
    @discardableResult
    func assertError<T>(_ body: @autoclosure () throws -> T, contains fragments: [String],
                        file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try body()
            XCTFail("expected an error containing \(fragments)", file: file, line: line)
            return ""
        } catch let error as LoRAKitError {
            for fragment in fragments where !error.message.contains(fragment) {
                XCTFail("\"\(error.message)\" does not contain \"\(fragment)\"", file: file, line: line)
            }
            XCTAssertFalse(error.message.contains("\n"), "one-line message: \(error.message)", file: file, line: line)
            return error.message
        } catch {
            XCTFail("expected a LoRAKitError, got \(error)", file: file, line: line)
            return ""
        }
    }
}
