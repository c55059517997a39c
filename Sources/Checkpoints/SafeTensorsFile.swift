import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where one tensor lives in a safetensors file.
public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range inside the data section (after the 8-byte length and the header), as in `data_offsets`.
    public let byteRange: Range<Int>

    /// Number of elements (1 for a scalar).
    public var count: Int { shape.reduce(1, *) }
}

/// A safetensors file, memory-mapped and validated on open.
///
/// The whole header is checked before any tensor is touched, so a corrupt or hostile file fails in `init` with
/// a message naming the file and the tensor, and no later access can read outside the mapping. Aligned F32
/// tensors are handed out without a copy, so a model's frozen weights cost page cache, not heap.
///
/// The mapping is `MAP_PRIVATE` with `PROT_READ | PROT_WRITE` so that borrowed tensors can honestly carry an
/// `UnsafeMutablePointer<Float>`; a write would only touch a private copy of the page and never reach the file.
/// Callers must still treat base weights as read-only: a write would silently change the weights every other
/// borrower of the same file sees.
public final class SafeTensorsFile: @unchecked Sendable {
    /// The path the file was opened from (used in every error message).
    public let path: String
    /// The `__metadata__` table (empty when the file has none).
    public let metadata: [String: String]
    /// Tensor names, sorted.
    public let names: [String]

    private let infos: [String: TensorInfo]
    private let mapping: UnsafeMutableRawPointer
    private let mappedLength: Int
    /// Byte offset of the data section inside the file: 8 + header length.
    private let dataStart: Int

    /// A header larger than this is treated as corrupt rather than parsed.
    public static let maximumHeaderBytes = 100_000_000

    /// Opens, maps and validates the file at `path`.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LoRAKitError.file(path, "cannot open: \(AtomicFile.errnoMessage())") }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw LoRAKitError.file(path, "cannot stat: \(AtomicFile.errnoMessage())") }
        guard status.st_mode & S_IFMT == S_IFREG else { throw LoRAKitError.file(path, "is not a regular file") }
        let fileSize = Int(status.st_size)
        guard fileSize >= 8 else {
            throw LoRAKitError.file(path, "is \(fileSize) bytes long, too short for a safetensors file (the 8-byte header length is missing)")
        }
        guard let mapped = mmap(nil, fileSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0),
              mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw LoRAKitError.file(path, "cannot memory-map: \(AtomicFile.errnoMessage())")
        }
        do {
            let parsed = try Self.parseHeader(UnsafeRawBufferPointer(start: mapped, count: fileSize), path: path)
            self.metadata = parsed.metadata
            self.infos = parsed.infos
            self.dataStart = parsed.dataStart
        } catch {
            munmap(mapped, fileSize)
            throw error
        }
        self.mapping = mapped
        self.mappedLength = fileSize
        self.names = infos.keys.sorted()
    }

    deinit { munmap(mapping, mappedLength) }

    /// The dtype, shape and byte range of `name`, or nil if the file has no such tensor.
    public func info(_ name: String) -> TensorInfo? { infos[name] }

    /// Whether the file holds a tensor called `name`.
    public func contains(_ name: String) -> Bool { infos[name] != nil }

    /// Drops the resident pages that lie wholly inside tensor `name`'s bytes from this process's memory (they are
    /// read again from the file if touched). For a caller that has made its own copy of the tensor (a quantized
    /// one) and holds no tensor borrowed from those bytes: a borrowed tensor would still read the right values,
    /// but written pages (a private copy) would be lost.
    public func releasePages(of name: String) {
        guard let info = infos[name] else { return }
        releaseWholePages(of: mapping, from: dataStart + info.byteRange.lowerBound, to: dataStart + info.byteRange.upperBound)
    }

    /// The tensor `name` as F32.
    ///
    /// Aligned F32 data is borrowed from the mapping (no copy; the tensor keeps this file alive). Unaligned F32,
    /// F16 and BF16 are converted into a new owned tensor.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = infos[name] else { throw LoRAKitError.file(path, "no tensor named \(name)") }
        // Validated in init: dataStart + byteRange.upperBound <= mappedLength.
        let source = UnsafeRawPointer(mapping + dataStart + info.byteRange.lowerBound)
        let count = info.count
        switch info.dtype {
        case .f32:
            if Int(bitPattern: source) % MemoryLayout<Float>.alignment == 0 {
                let pointer = (mapping + dataStart + info.byteRange.lowerBound).assumingMemoryBound(to: Float.self)
                return Tensor(borrowing: pointer, shape: info.shape, owner: self)
            }
            let out = Tensor(shape: info.shape)
            convert(count: count, into: out.data,
                    load: { source.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self) },
                    transform: { Float(bitPattern: UInt32(littleEndian: $0)) })
            return out
        case .f16:
            let out = Tensor(shape: info.shape)
            convert(count: count, into: out.data,
                    load: { source.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) },
                    transform: { HalfConversion.float(fromF16: UInt16(littleEndian: $0)) })
            return out
        case .bf16:
            let out = Tensor(shape: info.shape)
            convert(count: count, into: out.data,
                    load: { source.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) },
                    transform: { HalfConversion.float(fromBF16: UInt16(littleEndian: $0)) })
            return out
        }
    }

    /// out[i] = transform(load(i)) for i in 0..<count, split over threads for big tensors.
    @inline(__always)
    private func convert<Bits>(count: Int, into out: UnsafeMutablePointer<Float>,
                               load: (Int) -> Bits, transform: (Bits) -> Float) {
        parallelFor(count, minChunk: 1 << 16) { range in
            for i in range { out[i] = transform(load(i)) }
        }
    }

    // MARK: header validation

    private struct ParsedHeader {
        var metadata: [String: String]
        var infos: [String: TensorInfo]
        var dataStart: Int
    }

    /// Checks everything the header claims against the file's size before any tensor is read.
    private static func parseHeader(_ file: UnsafeRawBufferPointer, path: String) throws -> ParsedHeader {
        let fileSize = file.count
        let rawLength = UInt64(littleEndian: file.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard rawLength <= UInt64(Self.maximumHeaderBytes), Int(rawLength) <= fileSize - 8 else {
            throw LoRAKitError.file(path, "header length \(rawLength) is impossible for a file of \(fileSize) bytes (not a safetensors file, or truncated)")
        }
        let headerLength = Int(rawLength)
        let dataStart = 8 + headerLength
        let dataSize = fileSize - dataStart
        let headerBytes = Data(bytes: file.baseAddress! + 8, count: headerLength)
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: headerBytes, options: [])
        } catch {
            throw LoRAKitError.file(path, "header is not valid JSON (not a safetensors file, or corrupt)")
        }
        guard let header = object as? [String: Any] else {
            throw LoRAKitError.file(path, "header is not a JSON object")
        }

        var metadata: [String: String] = [:]
        var infos: [String: TensorInfo] = [:]
        for (name, entry) in header {
            if name == "__metadata__" {
                if entry is NSNull { continue }
                guard let table = entry as? [String: Any] else {
                    throw LoRAKitError.file(path, "__metadata__ is not a JSON object of strings")
                }
                for (key, value) in table {
                    guard let text = value as? String else {
                        throw LoRAKitError.file(path, "__metadata__ entry \(key) is not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            infos[name] = try parseEntry(name: name, entry: entry, dataSize: dataSize, path: path)
        }

        // Overlapping tensors would alias each other's memory: a corrupt or hand-crafted file.
        let ordered = infos.values.filter { !$0.byteRange.isEmpty }
            .sorted { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        for (previous, next) in zip(ordered, ordered.dropFirst())
        where next.byteRange.lowerBound < previous.byteRange.upperBound {
            throw LoRAKitError.file(path, "tensor \(next.name) overlaps tensor \(previous.name) (data_offsets \(previous.byteRange.lowerBound)..<\(previous.byteRange.upperBound) and \(next.byteRange.lowerBound)..<\(next.byteRange.upperBound))")
        }
        return ParsedHeader(metadata: metadata, infos: infos, dataStart: dataStart)
    }

    private static func parseEntry(name: String, entry: Any, dataSize: Int, path: String) throws -> TensorInfo {
        func fail(_ message: String) -> LoRAKitError { LoRAKitError.file(path, "tensor \(name) \(message)") }
        guard let fields = entry as? [String: Any] else { throw fail("has a header entry that is not a JSON object") }

        guard let dtypeValue = fields["dtype"] else { throw fail("has no dtype") }
        guard let dtypeName = dtypeValue as? String else { throw fail("has a dtype that is not a string") }
        guard let dtype = DType(safetensorsName: dtypeName) else {
            throw fail("has unsupported dtype \(dtypeName) (LoRAKit reads F32, F16, BF16)")
        }

        guard let shapeValue = fields["shape"] else { throw fail("has no shape") }
        guard let shapeList = shapeValue as? [Any] else { throw fail("has a shape that is not a list") }
        var shape: [Int] = []
        for dim in shapeList {
            guard let value = jsonInteger(dim), value >= 0 else {
                throw fail("has shape dimension \(jsonText(dim)), expected a non-negative integer")
            }
            shape.append(value)
        }

        guard let offsetsValue = fields["data_offsets"] else { throw fail("has no data_offsets") }
        guard let offsets = offsetsValue as? [Any], offsets.count == 2,
              let begin = jsonInteger(offsets[0]), let end = jsonInteger(offsets[1]) else {
            throw fail("has data_offsets \(jsonText(offsetsValue)), expected [begin, end] integers")
        }
        guard begin >= 0, begin <= end else { throw fail("has data_offsets [\(begin), \(end)] with begin > end or negative") }
        guard end <= dataSize else {
            throw fail("has data_offsets [\(begin), \(end)] beyond the end of the data (\(dataSize) bytes; the file is truncated or corrupt)")
        }

        var expected = dtype.byteSize
        for dim in shape {
            let (product, overflow) = expected.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw fail("has shape \(shape) too large to address") }
            expected = product
        }
        guard end - begin == expected else {
            throw fail("has \(end - begin) bytes of data but shape \(shape) of \(dtype.safetensorsName) needs \(expected)")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, byteRange: begin..<end)
    }
}

/// A JSON number that is an integer (not a boolean, not a fraction, within Int), else nil.
///
/// Foundation bridges JSON `true` and `2.5` to NSNumber too, and both would cast to Int; the number's
/// C type tells them apart ("c" = bool, "d"/"f" = floating point).
func jsonInteger(_ value: Any) -> Int? {
    guard let number = value as? NSNumber, !(number is NSDecimalNumber) else { return nil }
    let kind = String(cString: number.objCType)
    if kind == "c" || kind == "C" || kind == "B" || kind == "d" || kind == "f" { return nil }
    return value as? Int
}

/// A short rendering of a JSON value for error messages.
func jsonText(_ value: Any) -> String {
    if let text = value as? String { return "\"\(text)\"" }
    if value is NSNull { return "null" }
    if JSONSerialization.isValidJSONObject([value]),
       let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys]),
       var text = String(data: data, encoding: .utf8) {
        text.removeFirst(); text.removeLast()
        return text.count > 80 ? String(text.prefix(77)) + "..." : text
    }
    return "\(value)"
}

/// Drops the whole pages of a private file mapping that lie inside bytes `lower..<upper` (`MADV_DONTNEED`: they are
/// read again from the file if touched); the partial pages at either end may hold a neighbour's bytes and stay.
func releaseWholePages(of mapping: UnsafeMutableRawPointer, from lower: Int, to upper: Int) {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    guard page > 0 else { return }
    let first = (lower + page - 1) / page * page, last = upper / page * page
    if first < last { _ = madvise(mapping + first, last - first, Int32(MADV_DONTNEED)) }
}
