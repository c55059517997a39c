import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// libFuzzer's signature for one input: bytes and their count; returns 0 (the input is kept or not by coverage).
public typealias FuzzTestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

#if LORAKIT_FUZZ
/// libFuzzer's entry point for a program with its own `main` (compiler-rt FuzzerDriver.cpp).
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                                 _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                                 _ callback: FuzzTestOneInput) -> CInt
#endif

/// The `main` of every fuzz target.
///
/// Built by `scripts/fuzz.sh` (`-sanitize=fuzzer -D LORAKIT_FUZZ`) it hands control to libFuzzer, which takes
/// libFuzzer's flags and corpus directories. In an ordinary build it replays the files (or the files in the
/// directories) given on the command line once each, so a corpus or a crash input can be re-run in a debugger:
/// `swift run FuzzSafeTensors Tests/Fuzz/corpus/safetensors`.
public func runFuzzer(_ testOneInput: FuzzTestOneInput) -> Never {
    #if LORAKIT_FUZZ
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
    #else
    let fm = FileManager.default
    var files: [String] = []
    for argument in CommandLine.arguments.dropFirst() {
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: argument, isDirectory: &isDirectory) else {
            FileHandle.standardError.write(Data("\(argument): no such file\n".utf8))
            exit(2)
        }
        if isDirectory.boolValue {
            let names = ((try? fm.contentsOfDirectory(atPath: argument)) ?? []).sorted()
            files += names.map { argument + "/" + $0 }
        } else {
            files.append(argument)
        }
    }
    if files.isEmpty {
        FileHandle.standardError.write(Data("usage: \(CommandLine.arguments[0]) FILE|DIRECTORY... (replays each input once)\n".utf8))
        exit(2)
    }
    for path in files {
        let bytes = [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data())
        _ = bytes.withUnsafeBufferPointer { testOneInput($0.baseAddress, $0.count) }
        print("ok \(path)")
    }
    exit(0)
    #endif
}

/// A file this process rewrites with each input, for parsers that take a path (they mmap or stat it).
///
/// It lives in `/dev/shm` when there is one (no disk writes at tens of thousands of inputs a second) and is
/// named after the process, so parallel fuzzing jobs do not share it.
public final class ScratchFile {
    public let path: String

    public init(extension ext: String) {
        let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        path = "\(directory)/lorakit-fuzz-\(getpid()).\(ext)"
        // libFuzzer ends the process with exit(), so deinit of a global never runs; atexit handlers do.
        if scratchPaths.isEmpty { atexit { for path in scratchPaths { unlink(path) } } }
        scratchPaths.append(path)
    }

    /// Replaces the file's contents with `count` bytes at `bytes`.
    public func write(_ bytes: UnsafePointer<UInt8>?, _ count: Int) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "cannot create \(path)")
        if let bytes { writeAll(fd, bytes, count, path: path) }
        close(fd)
    }

    deinit { unlink(path) }
}

/// The scratch files to remove when the process exits.
private var scratchPaths: [String] = []

private func writeAll(_ fd: CInt, _ bytes: UnsafePointer<UInt8>, _ count: Int, path: String) {
    var written = 0
    while written < count {
        let n = write(fd, bytes + written, count - written)
        precondition(n > 0, "cannot write \(path)")
        written += n
    }
}

/// Whether `text` holds `part` byte for byte (String's `contains` compares characters, and a combining mark in
/// the template right after a value changes where characters begin).
public func containsBytes(_ text: String, _ part: String) -> Bool {
    let haystack = Array(text.utf8), needle = Array(part.utf8)
    if needle.isEmpty { return true }
    guard haystack.count >= needle.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start..<(start + needle.count)].elementsEqual(needle) {
        return true
    }
    return false
}
