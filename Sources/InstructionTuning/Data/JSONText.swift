import Foundation
import Tensors

/// Reading a JSON text file so that every way it can be wrong becomes one message naming the file and the place:
/// the file cannot be read, a byte is not UTF-8, or the JSON is malformed at line L, column C.
///
/// Lines and columns are 1-based; a column counts characters (Unicode scalars), not bytes.
enum JSONText {
    /// The bytes of the file at `path`, checked to be UTF-8 without NUL bytes, with a leading byte-order mark removed.
    ///
    /// `what` names the file's role in messages ("dataset", "template").
    static func read(path: String, what: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw LoRAKitError.file(path, "no such \(what) file")
        }
        if isDirectory.boolValue { throw LoRAKitError.file(path, "is a directory, not a \(what) file") }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw LoRAKitError.file(path, "cannot read the \(what) file (\(error.localizedDescription))")
        }
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        if let bad = firstInvalidUTF8(bytes) {
            let (line, column) = position(ofByte: bad.offset, in: bytes)
            throw LoRAKitError.file(path, "not UTF-8 text: \(bad.reason) 0x\(String(bad.byte, radix: 16, uppercase: true)) "
                + "at byte offset \(bad.offset) (line \(line), column \(column)); save the file as UTF-8")
        }
        if let nul = bytes.firstIndex(of: 0) {
            let (line, column) = position(ofByte: nul, in: bytes)
            throw LoRAKitError.file(path, "a NUL byte at byte offset \(nul) (line \(line), column \(column)); "
                + "JSON text has none (is the file UTF-16?); save the file as UTF-8")
        }
        return bytes
    }

    /// The JSON value of the whole file at `path` (read as `read(path:what:)` does); malformed JSON is an error
    /// naming the line and column.
    static func parseFile(path: String, what: String) throws -> Any {
        let bytes = try read(path: path, what: what)
        switch parse(bytes[...]) {
        case .success(let value): return value
        case .failure(let error): throw malformed(error, in: bytes, path: path)
        }
    }

    /// The first byte that does not begin a well-formed UTF-8 sequence (Unicode table 3-7: no overlong forms,
    /// no surrogates, nothing above U+10FFFF), or nil when all bytes are well formed.
    static func firstInvalidUTF8(_ bytes: [UInt8]) -> (offset: Int, byte: UInt8, reason: String)? {
        bytes.withUnsafeBufferPointer { bytes in
            let n = bytes.count
            var i = 0
            while i < n {
                let lead = bytes[i]
                if lead < 0x80 { i += 1; continue }
                // The second byte's allowed range depends on the lead byte; later ones are always 80...BF.
                var length = 0, low: UInt8 = 0x80, high: UInt8 = 0xBF
                switch lead {
                case 0xC2...0xDF: length = 2
                case 0xE0: length = 3; low = 0xA0
                case 0xE1...0xEC, 0xEE...0xEF: length = 3
                case 0xED: length = 3; high = 0x9F
                case 0xF0: length = 4; low = 0x90
                case 0xF1...0xF3: length = 4
                case 0xF4: length = 4; high = 0x8F
                default:
                    return (i, lead, lead < 0xC0 ? "unexpected continuation byte" : "invalid byte")
                }
                if i + length > n { return (i, lead, "truncated multi-byte sequence starting with byte") }
                if bytes[i + 1] < low || bytes[i + 1] > high {
                    return (i, lead, "invalid multi-byte sequence starting with byte")
                }
                for k in 2..<length where bytes[i + k] < 0x80 || bytes[i + k] > 0xBF {
                    return (i, lead, "invalid multi-byte sequence starting with byte")
                }
                i += length
            }
            return nil
        }
    }

    /// The 1-based line and column of the byte at `offset` (which may be `bytes.count`, the end of the text).
    static func position(ofByte offset: Int, in bytes: [UInt8]) -> (line: Int, column: Int) {
        let end = min(max(offset, 0), bytes.count)
        var line = 1, column = 1
        for i in 0..<end {
            if bytes[i] == 0x0A {
                line += 1
                column = 1
            } else if bytes[i] & 0xC0 != 0x80 {
                // Continuation bytes belong to the character their lead byte began.
                column += 1
            }
        }
        return (line, column)
    }

    /// Why JSONSerialization refused a text, and where when it says so.
    struct SyntaxError: Error {
        /// The byte offset of the problem, nil when the parser did not say.
        var offset: Int?
        /// The parser's reason, without its location: "invalid value", "unexpected end of file during JSON parse".
        var reason: String
    }

    /// Calls `body` with each line of a JSONL file that holds more than white space, and its 1-based number.
    static func forEachLine(in bytes: [UInt8], _ body: (_ line: ArraySlice<UInt8>, _ number: Int) throws -> Void) rethrows {
        var number = 0, start = 0
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: 0x0A) ?? bytes.count
            number += 1
            let line = bytes[start..<end]
            start = end + 1
            if line.contains(where: { !InstructionDataset.isWhitespace($0) }) { try body(line, number) }
        }
    }

    /// "line N, column C" of a syntax error inside one line of a JSONL file ("line N" without an offset).
    static func place(of error: SyntaxError, line: ArraySlice<UInt8>, number: Int) -> String {
        let column = error.offset.map { position(ofByte: $0, in: Array(line)).column }
        return column.map { "line \(number), column \($0)" } ?? "line \(number)"
    }

    /// The parsed value of `bytes` (any JSON value, not only containers), or the syntax error.
    static func parse(_ bytes: ArraySlice<UInt8>) -> Result<Any, SyntaxError> {
        do {
            return .success(try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]))
        } catch {
            return .failure(syntaxError(error, in: bytes))
        }
    }

    /// A JSONSerialization error as offset and reason. Darwin puts the offset in the user info; Linux writes
    /// "… around character N." in the debug description (N is a 0-based byte offset). An unexpected end has no
    /// offset: it is the end of the text. A lone surrogate escape is reported as an end of file; find it instead.
    static func syntaxError(_ error: Error, in bytes: ArraySlice<UInt8>) -> SyntaxError {
        let info = (error as NSError).userInfo
        var reason = (info[NSDebugDescriptionErrorKey] as? String) ?? (error as NSError).localizedDescription
        var offset = info["NSJSONSerializationErrorIndex"] as? Int
        if let range = reason.range(of: #" around (line \d+, column \d+, )?character \d+"#, options: .regularExpression) {
            let digits = reason[range].split(separator: " ").last.flatMap { Int($0) }
            offset = offset ?? digits
            reason.removeSubrange(range)
        }
        if reason.localizedCaseInsensitiveContains("surrogate"), let escape = loneSurrogateEscape(bytes) {
            offset = escape
            reason = "a \\u escape is half of a UTF-16 surrogate pair, without its other half"
        }
        if offset == nil, reason.localizedCaseInsensitiveContains("end of file")
            || reason.localizedCaseInsensitiveContains("end of data") {
            offset = bytes.count
        }
        while reason.hasSuffix(".") { reason.removeLast() }
        if let first = reason.first { reason = first.lowercased() + reason.dropFirst() }
        return SyntaxError(offset: offset.map { min(max($0, 0), bytes.count) }, reason: reason)
    }

    /// The offset (from the slice's start) of the first `\uXXXX` escape that is a high surrogate without a low
    /// one after it, or a low surrogate without a high one before it.
    static func loneSurrogateEscape(_ bytes: ArraySlice<UInt8>) -> Int? {
        /// The value of a `\uXXXX` escape starting at `i`, nil when there is none.
        func escape(at i: Int) -> Int? {
            guard i + 6 <= bytes.endIndex, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                return nil
            }
            var value = 0
            for byte in bytes[(i + 2)..<(i + 6)] {
                guard let digit = Int(String(UnicodeScalar(byte)), radix: 16) else { return nil }
                value = value * 16 + digit
            }
            return value
        }
        var i = bytes.startIndex
        while i < bytes.endIndex {
            guard bytes[i] == UInt8(ascii: "\\") else { i += 1; continue }
            // Any other escape is two bytes; skipping both keeps an escaped backslash before "u" from looking like \u.
            guard let value = escape(at: i) else { i += 2; continue }
            switch value {
            case 0xD800...0xDBFF:
                if let low = escape(at: i + 6), (0xDC00...0xDFFF).contains(low) { i += 12; continue }
                return i - bytes.startIndex
            case 0xDC00...0xDFFF:
                return i - bytes.startIndex
            default:
                i += 6
            }
        }
        return nil
    }

    /// The error of malformed JSON, at the line and column the parser named.
    static func malformed(_ error: JSONText.SyntaxError, in bytes: [UInt8], path: String) -> LoRAKitError {
        guard let offset = error.offset else { return LoRAKitError.file(path, "malformed JSON (\(error.reason))") }
        let (line, column) = JSONText.position(ofByte: offset, in: bytes)
        return LoRAKitError.file(path, "malformed JSON at line \(line), column \(column) (\(error.reason))")
    }

    /// What a JSON value is, for messages: "a string", "a number", "a boolean", "null", "an array", "an object".
    static func kind(of value: Any) -> String {
        switch value {
        case is NSNull: return "null"
        case is String: return "a string"
        case let number as NSNumber:
            // JSONSerialization stores true/false as char-typed NSNumbers; numbers in JSON are never chars.
            return String(cString: number.objCType) == "c" ? "a boolean" : "a number"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        default: return "a \(type(of: value))"
        }
    }
}
