import Foundation
import XCTest

/// Runs the built `lora` executable as a user would and captures what it prints.
struct LoraRun {
    var status: Int32
    var stdout: String
    var stderr: String
    /// True when the process died of a signal (a Swift runtime trap is SIGILL/SIGTRAP).
    var crashed: Bool
}

enum Lora {
    static let executable: URL = {
        // The test bundle sits beside the products of the same build, `lora` among them.
        let candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                          Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
        for directory in candidates {
            let url = directory.appendingPathComponent("lora")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return candidates[0].appendingPathComponent("lora")
    }()

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func fixture(_ path: String) -> String { fixtures.appendingPathComponent(path).path }

    /// `stdin`, when given, is what the process reads on its standard input.
    @discardableResult
    static func run(_ arguments: [String], stdin: String? = nil) throws -> LoraRun {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        // Output goes to temporary files: no pipe can fill up and block the process.
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("lora-run-\(UUID().uuidString)")
        let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        let inURL = base.appendingPathExtension("in")
        if let stdin {
            try Data(stdin.utf8).write(to: inURL)
            process.standardInput = try FileHandle(forReadingFrom: inURL)
        }
        defer { try? FileManager.default.removeItem(at: inURL) }
        try process.run()
        process.waitUntilExit()
        let outData = (try? Data(contentsOf: outURL)) ?? Data()
        let errData = (try? Data(contentsOf: errURL)) ?? Data()
        return LoraRun(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                       stderr: String(decoding: errData, as: UTF8.self),
                       crashed: process.terminationReason == .uncaughtSignal)
    }

    static func temporaryDirectory() throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lorakit-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url.path
    }
}

extension XCTestCase {
    /// Asserts a clean user error: non-zero exit below 128, no signal, a message on stderr containing `needle`.
    func assertCleanFailure(_ run: LoraRun, mentions needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(run.crashed, "lora died of a signal: \(run.stderr)", file: file, line: line)
        XCTAssertNotEqual(run.status, 0, "lora succeeded but should have failed", file: file, line: line)
        XCTAssertLessThan(run.status, 128, file: file, line: line)
        XCTAssertTrue(run.stderr.contains(needle), "stderr does not mention '\(needle)': \(run.stderr)", file: file, line: line)
        XCTAssertFalse(run.stderr.contains("Fatal error"), run.stderr, file: file, line: line)
    }
}
