import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes files and directories so that they are either complete or absent, never half-written.
///
/// A file is written to a hidden temporary sibling (`.NAME.tmp-PID-RANDOM`), flushed to disk, then renamed over
/// the target; rename within one directory is atomic, so a crash or a full disk leaves the old file (or nothing),
/// not a truncated checkpoint. Costs one fsync per file and one per directory.
public enum AtomicFile {
    /// Writes `data` to `path` atomically.
    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { handle in try handle.write(contentsOf: data) }
    }

    /// Streams a file to `path` atomically: `body` writes into a handle on the temporary file.
    ///
    /// On any error (from `body`, or the disk) the temporary is removed and the error names `path`.
    public static func write(to path: String, _ body: (FileHandle) throws -> Void) throws {
        let (directory, name) = try split(path)
        let temporary = join(directory, ".\(name).tmp-\(getpid())-\(randomSuffix())")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw LoRAKitError.file(path, "cannot create a temporary file in \(directory): \(errnoMessage())")
        }
        var isOpen = true
        do {
            let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: false)
            try body(handle)
            guard fsync(fd) == 0 else { throw LoRAKitError.file(path, "cannot flush to disk: \(errnoMessage())") }
            isOpen = false
            guard close(fd) == 0 else { throw LoRAKitError.file(path, "cannot finish writing: \(errnoMessage())") }
            guard rename(temporary, path) == 0 else {
                throw LoRAKitError.file(path, "cannot replace the file: \(errnoMessage())")
            }
        } catch {
            if isOpen { close(fd) }
            unlink(temporary)
            throw wrap(error, path: path)
        }
        syncDirectory(directory)
    }

    /// Builds a whole directory at `path` atomically: `body` fills a temporary sibling directory (its path is
    /// the argument), which is then renamed into place.
    ///
    /// An existing `path` is refused unless `overwrite`; with `overwrite` the old one is renamed away first and
    /// removed only after the new one is in place. On any error the temporary directory is removed.
    public static func writeDirectory(at path: String, overwrite: Bool, _ body: (String) throws -> Void) throws {
        var target = path
        while target.count > 1 && target.hasSuffix("/") { target.removeLast() }
        let (parent, name) = try split(target)
        var status = stat()
        let exists = lstat(target, &status) == 0
        if exists && !overwrite {
            throw LoRAKitError.file(target, "already exists; choose another output path or allow overwriting it")
        }
        let temporary = join(parent, ".\(name).tmp-\(getpid())-\(randomSuffix())")
        guard mkdir(temporary, 0o777) == 0 else {
            throw LoRAKitError.file(target, "cannot create a temporary directory in \(parent): \(errnoMessage())")
        }
        do {
            try body(temporary)
            try syncTree(temporary)
        } catch {
            removeTree(temporary)
            throw wrap(error, path: target)
        }
        if exists {
            let old = join(parent, ".\(name).old-\(getpid())-\(randomSuffix())")
            guard rename(target, old) == 0 else {
                let message = errnoMessage()
                removeTree(temporary)
                throw LoRAKitError.file(target, "cannot move the existing one aside to replace it: \(message)")
            }
            guard rename(temporary, target) == 0 else {
                let message = errnoMessage()
                rename(old, target)
                removeTree(temporary)
                throw LoRAKitError.file(target, "cannot move the new directory into place: \(message)")
            }
            removeTree(old)
        } else {
            guard rename(temporary, target) == 0 else {
                let message = errnoMessage()
                removeTree(temporary)
                throw LoRAKitError.file(target, "cannot move the new directory into place: \(message)")
            }
        }
        syncDirectory(parent)
    }

    // MARK: helpers

    /// "dir/name" -> ("dir", "name"); a bare name lives in ".".
    private static func split(_ path: String) throws -> (directory: String, name: String) {
        guard !path.isEmpty, !path.hasSuffix("/") else {
            throw LoRAKitError.file(path.isEmpty ? "(empty path)" : path, "expected a file name, not a directory path")
        }
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = slash == path.startIndex ? "/" : String(path[..<slash])
        return (directory, String(path[path.index(after: slash)...]))
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    private static func randomSuffix() -> String {
        String(UInt32.random(in: 0...UInt32.max), radix: 16)
    }

    static func errnoMessage() -> String { String(cString: strerror(errno)) }

    /// Keeps LoRAKit's own errors; turns Foundation's into one line naming the path and the system's reason.
    private static func wrap(_ error: Error, path: String) -> Error {
        if error is LoRAKitError { return error }
        return LoRAKitError.file(path, "could not write: \(describe(error))")
    }

    /// "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/"; trailing slashes are ignored. (NSString's
    /// `deletingLastPathComponent` traps on a one-character relative path such as "o" in corelibs Foundation.)
    public static func parentDirectory(of path: String) -> String {
        var path = path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The POSIX reason under a Foundation error ("No space left on device") when there is one.
    public static func describe(_ error: Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError,
           underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if nsError.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(nsError.code))) }
        return nsError.localizedDescription
    }

    /// Makes a rename durable. Best effort: the rename already happened, and some file systems refuse fsync on
    /// a directory (EINVAL), which must not turn a finished write into an error.
    private static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// Flushes every file and directory under `root` (the body may have written files without fsync).
    private static func syncTree(_ root: String) throws {
        var paths = [root]
        if let enumerator = FileManager.default.enumerator(atPath: root) {
            while let relative = enumerator.nextObject() as? String { paths.append(join(root, relative)) }
        }
        for path in paths {
            var status = stat()
            guard lstat(path, &status) == 0 else { continue }
            let kind = status.st_mode & S_IFMT
            guard kind == S_IFREG || kind == S_IFDIR else { continue }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw LoRAKitError.file(path, "cannot open to flush: \(errnoMessage())") }
            let result = fsync(fd)
            let failure = errno
            close(fd)
            if result != 0 && failure != EINVAL {
                throw LoRAKitError.file(path, "cannot flush to disk: \(String(cString: strerror(failure)))")
            }
        }
    }

    private static func removeTree(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }
}
