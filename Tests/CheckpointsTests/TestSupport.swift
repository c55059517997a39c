import Foundation
import XCTest
import Tensors
@testable import Checkpoints

/// A fresh temporary directory per test, removed afterwards.
class TemporaryDirectoryTestCase: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "lorakit-ckpt-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        chmod(directory, 0o755)
        try? FileManager.default.removeItem(atPath: directory)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Entries of a directory, hidden ones included, sorted.
    func listing(_ dir: String? = nil) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir ?? directory).sorted()
    }

    /// Writes a safetensors file by hand: `headerLength` (default: the header's size), the header text, data.
    @discardableResult
    func writeRaw(_ name: String, header: String, data: [UInt8] = [], headerLength: UInt64? = nil) throws -> String {
        let headerBytes = Array(header.utf8)
        var length = (headerLength ?? UInt64(headerBytes.count)).littleEndian
        var bytes = [UInt8](repeating: 0, count: 8)
        withUnsafeBytes(of: &length) { for i in 0..<8 { bytes[i] = $0[i] } }
        bytes += headerBytes + data
        let file = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    /// Asserts that `body` throws a LoRAKitError whose message contains every fragment.
    func assertError(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an error containing \(fragments)", file: file, line: line)
        } catch let error as LoRAKitError {
            for fragment in fragments where !error.message.contains(fragment) {
                XCTFail("error \"\(error.message)\" does not contain \"\(fragment)\"", file: file, line: line)
            }
        } catch {
            XCTFail("expected a LoRAKitError, got \(error)", file: file, line: line)
        }
    }
}

/// Little-endian bytes of Floats / 16-bit patterns, for hand-made files.
func bytes(ofFloats values: [Float]) -> [UInt8] {
    values.flatMap { value -> [UInt8] in
        let bits = value.bitPattern.littleEndian
        return (0..<4).map { UInt8(truncatingIfNeeded: bits >> (8 * $0)) }
    }
}

func bytes(ofHalves values: [UInt16]) -> [UInt8] {
    values.flatMap { [UInt8(truncatingIfNeeded: $0), UInt8(truncatingIfNeeded: $0 >> 8)] }
}
