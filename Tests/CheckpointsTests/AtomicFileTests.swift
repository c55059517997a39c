import Foundation
import XCTest
import Tensors
@testable import Checkpoints

final class AtomicFileTests: TemporaryDirectoryTestCase {
    private struct Interrupted: Error {}

    func testWriteCreatesAndReplacesWithoutLeftovers() throws {
        let file = path("out.json")
        try AtomicFile.write(Data("old".utf8), to: file)
        try AtomicFile.write(to: file) { handle in
            try handle.write(contentsOf: Data("new ".utf8))
            try handle.write(contentsOf: Data("content".utf8))
        }
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8), "new content")
        XCTAssertEqual(try listing(), ["out.json"])
    }

    func testRelativePathWritesIntoTheCurrentDirectory() throws {
        let previous = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(directory))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
        try AtomicFile.write(Data("x".utf8), to: "bare.txt")
        XCTAssertEqual(try listing(), ["bare.txt"])
    }

    func testFailingBodyKeepsTheOldFileAndRemovesTheTemporary() throws {
        let file = path("keep.txt")
        try AtomicFile.write(Data("old".utf8), to: file)
        XCTAssertThrowsError(try AtomicFile.write(to: file) { handle in
            try handle.write(contentsOf: Data("half-writ".utf8))
            throw Interrupted()
        })
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8), "old")
        XCTAssertEqual(try listing(), ["keep.txt"])
    }

    func testBodyErrorsAreWrappedWithThePath() throws {
        let file = path("wrapped.txt")
        assertError([file, "could not write"]) {
            try AtomicFile.write(to: file) { _ in throw CocoaError(.fileWriteOutOfSpace) }
        }
        XCTAssertEqual(try listing(), [])
    }

    func testFailedRenameLeavesNothingBehind() throws {
        // The temporary is complete but cannot replace a non-empty directory.
        let target = path("occupied")
        try FileManager.default.createDirectory(atPath: target + "/inner", withIntermediateDirectories: true)
        assertError([target, "cannot replace the file"]) { try AtomicFile.write(Data("x".utf8), to: target) }
        XCTAssertEqual(try listing(), ["occupied"])
    }

    func testMissingDirectoryIsAClearError() throws {
        let file = path("no/such/dir/file.txt")
        assertError([file, "cannot create a temporary file", "No such file or directory"]) {
            try AtomicFile.write(Data("x".utf8), to: file)
        }
        XCTAssertEqual(try listing(), [])
    }

    func testUnwritableDirectoryLeavesNothingBehind() throws {
        // root ignores directory permissions, so this case is only observable for other users.
        try XCTSkipIf(geteuid() == 0, "running as root: permissions do not stop writes")
        let locked = path("locked")
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
        XCTAssertEqual(chmod(locked, 0o555), 0)
        defer { chmod(locked, 0o755) }
        assertError([locked + "/w.safetensors", "Permission denied"]) {
            try SafeTensorsWriter.write([("w", Tensor(shape: [1]))], metadata: [:], to: locked + "/w.safetensors")
        }
        XCTAssertEqual(try listing(locked), [])
    }

    func testDirectoryPathIsNotAFileName() throws {
        assertError(["expected a file name"]) { try AtomicFile.write(Data(), to: directory + "/") }
    }

    // MARK: writeDirectory

    func testWriteDirectoryCreatesTheWholeDirectory() throws {
        let target = path("model")
        try AtomicFile.writeDirectory(at: target, overwrite: false) { temporary in
            XCTAssertNotEqual(temporary, target)
            XCTAssertFalse(FileManager.default.fileExists(atPath: target), "the target appears only when complete")
            try Data("{}".utf8).write(to: URL(fileURLWithPath: temporary + "/config.json"))
            try FileManager.default.createDirectory(atPath: temporary + "/sub", withIntermediateDirectories: false)
            try AtomicFile.write(Data("a".utf8), to: temporary + "/sub/a.txt")
        }
        XCTAssertEqual(try listing(), ["model"])
        XCTAssertEqual(try listing(target), ["config.json", "sub"])
        XCTAssertEqual(try String(contentsOfFile: target + "/sub/a.txt", encoding: .utf8), "a")
    }

    func testWriteDirectoryRefusesAnExistingPathWithoutOverwrite() throws {
        let target = path("existing")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: target + "/old.txt"))
        var ran = false
        assertError([target, "already exists"]) {
            try AtomicFile.writeDirectory(at: target + "/", overwrite: false) { _ in ran = true }
        }
        XCTAssertFalse(ran, "nothing is built for a refused path")
        XCTAssertEqual(try listing(target), ["old.txt"])
        XCTAssertEqual(try listing(), ["existing"])
    }

    func testWriteDirectoryOverwriteReplacesTheOldDirectory() throws {
        let target = path("replace")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        try Data("old".utf8).write(to: URL(fileURLWithPath: target + "/old.txt"))
        try AtomicFile.writeDirectory(at: target, overwrite: true) { temporary in
            try Data("new".utf8).write(to: URL(fileURLWithPath: temporary + "/new.txt"))
        }
        XCTAssertEqual(try listing(target), ["new.txt"])
        XCTAssertEqual(try listing(), ["replace"], "the old directory is removed, not left beside")
    }

    func testWriteDirectoryFailureLeavesOldContentsAndNoTemporary() throws {
        let target = path("stable")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        try Data("old".utf8).write(to: URL(fileURLWithPath: target + "/old.txt"))
        XCTAssertThrowsError(try AtomicFile.writeDirectory(at: target, overwrite: true) { temporary in
            try Data("partial".utf8).write(to: URL(fileURLWithPath: temporary + "/partial.txt"))
            throw Interrupted()
        })
        XCTAssertEqual(try listing(target), ["old.txt"])
        XCTAssertEqual(try listing(), ["stable"])

        let fresh = path("fresh")
        assertError([fresh, "missing tensor"]) {
            try AtomicFile.writeDirectory(at: fresh, overwrite: false) { _ in throw LoRAKitError.file(fresh, "missing tensor x") }
        }
        XCTAssertEqual(try listing(), ["stable"])
    }
}
