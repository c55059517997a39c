import Foundation

/// A flat, row-major block of `Float`s with a shape.
///
/// A tensor either owns its memory (64-byte aligned, zero-filled, freed on deinit) or borrows it from an
/// owner that it keeps alive, such as a memory-mapped safetensors file. Kernels take `data` directly;
/// the class exists so that every buffer of a role is allocated once and reused.
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>
    private let owned: Bool
    private let keepAlive: AnyObject?

    /// A new zero-filled tensor.
    public init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = Self.allocate(bytes: bytes)
        raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
        self.data = raw.assumingMemoryBound(to: Float.self)
        self.owned = true
        self.keepAlive = nil
    }

    /// A new tensor holding `values`.
    public convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    /// A tensor over memory owned by `owner` (kept alive as long as the tensor is).
    public init(borrowing pointer: UnsafeMutablePointer<Float>, shape: [Int], owner: AnyObject) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.data = pointer
        self.owned = false
        self.keepAlive = owner
    }

    deinit {
        if owned { free(data) }
    }

    /// Buffers of at least this many bytes start on a 2 MiB boundary and ask for transparent huge pages.
    static let hugePageBytes = 1 << 21

    /// `bytes` of memory, 64-byte aligned; a large buffer is 2 MiB aligned with its whole 2 MiB pages marked
    /// `MADV_HUGEPAGE`. Generating a token reads every weight once: with 4 KiB pages that is one TLB miss per 4 KiB
    /// of a 500 MB model, and huge pages made one-token decoding about 7 % faster on the benchmark's M model (this
    /// machine runs transparent huge pages in `madvise` mode). Only whole pages inside the buffer are marked, so a
    /// buffer never costs more resident memory than its size. Freed with `free`.
    private static func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let alignment = bytes >= hugePageBytes ? hugePageBytes : 64
        var pointer: UnsafeMutableRawPointer?
        guard posix_memalign(&pointer, alignment, bytes) == 0, let pointer else {
            fatalError("out of memory: cannot allocate a tensor of \(bytes) bytes")
        }
        #if os(Linux)
        if bytes >= hugePageBytes {
            _ = madvise(pointer, bytes / hugePageBytes * hugePageBytes, Int32(MADV_HUGEPAGE))
        }
        #endif
        return pointer
    }

    public var bytes: Int { count * MemoryLayout<Float>.stride }

    /// Whether this tensor allocated its memory (false for a view or a tensor borrowed from a memory map).
    public var ownsMemory: Bool { owned }

    public func zero() { data.update(repeating: 0, count: count) }

    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy: \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }

    /// A fresh owned copy.
    public func clone() -> Tensor {
        let t = Tensor(shape: shape)
        t.copy(from: self)
        return t
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    public subscript(index: Int) -> Float {
        get { data[index] }
        set { data[index] = newValue }
    }

    /// Rows × columns of a matrix, the last dimension being the columns.
    public var columns: Int { shape.last ?? 1 }
    public var rows: Int { columns == 0 ? 0 : count / columns }
}
