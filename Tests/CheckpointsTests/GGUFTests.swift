import Foundation
import Tensors
import XCTest
@testable import Checkpoints

/// The GGUF writer and reader: the byte layout of GGUF v3, round trips of every value type, and clear errors on
/// damaged files. (Agreement with llama.cpp's own files is tested in TargetingTests/MergeExportTests.)
final class GGUFTests: TemporaryDirectoryTestCase {
    func sampleWriter() throws -> GGUFWriter {
        var writer = GGUFWriter()
        try writer.add("general.architecture", .string("llama"))
        try writer.add("u8", .uint8(200))
        try writer.add("i8", .int8(-7))
        try writer.add("u16", .uint16(60000))
        try writer.add("i16", .int16(-30000))
        try writer.add("u32", .uint32(4_000_000_000))
        try writer.add("i32", .int32(-2_000_000_000))
        try writer.add("f32", .float32(0.1))
        try writer.add("flag", .bool(true))
        try writer.add("u64", .uint64(1 << 40))
        try writer.add("i64", .int64(-(1 << 40)))
        try writer.add("f64", .float64(-2.5e-300))
        try writer.add("text", .string("naïve ▁piece 🙂"))
        try writer.add("tokens", .strings(["<s>", "", "▁the"]))
        try writer.add("scores", .float32s([0, -1.5, 3]))
        try writer.add("nested", .array(.array, [.int32s([1, 2]), .int32s([])]))
        let matrix = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6.5])
        let vector = Tensor(shape: [5], values: [0.1, -0.2, 65504, 1e-8, -3])
        try writer.addTensor("matrix", matrix, type: .f32)
        try writer.addTensor("vector.f16", vector, type: .f16)
        try writer.addTensor("matrix.bf16", matrix, type: .bf16)
        return writer
    }

    func testRoundTripOfEveryValueTypeAndTensorType() throws {
        let writer = try sampleWriter()
        try writer.write(to: path("a.gguf"))
        let file = try GGUFFile(path: path("a.gguf"))
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.keys, writer.metadata.map(\.key))
        for (key, value) in writer.metadata { XCTAssertEqual(file.metadata[key], value, key) }
        XCTAssertEqual(file.tensors.map(\.name), ["matrix", "vector.f16", "matrix.bf16"])
        XCTAssertEqual(file.tensors.map(\.shape), [[2, 3], [5], [2, 3]])
        XCTAssertEqual(file.tensors.map(\.type), [.f32, .f16, .bf16])
        XCTAssertEqual(try file.tensor("matrix").array, [1, 2, 3, 4, 5, 6.5])
        XCTAssertEqual(try file.tensor("matrix.bf16").array, [1, 2, 3, 4, 5, 6.5])
        let half = try file.tensor("vector.f16").array
        let want: [Float] = [0.1, -0.2, 65504, 1e-8, -3].map { HalfConversion.float(fromF16: HalfConversion.f16Bits($0)) }
        XCTAssertEqual(half, want)
        XCTAssertNotEqual(half[0], 0.1, "F16 must really be rounded")
        for info in file.tensors { XCTAssertEqual(info.fileOffset % 32, 0, "\(info.name) is not 32-byte aligned") }
        XCTAssertNil(file.metadata["general.alignment"], "the default alignment is not written")
    }

    /// The header bytes, checked by hand against the format: magic, version, counts, a key, ggml's dimension order.
    func testByteLayoutOfTheHeader() throws {
        var writer = GGUFWriter()
        try writer.add("k", .uint32(7))
        try writer.addTensor("w", Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]), type: .f32)
        try writer.write(to: path("b.gguf"))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path("b.gguf"))))
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) } }
        XCTAssertEqual(Array(bytes[0..<4]), Array("GGUF".utf8))
        XCTAssertEqual(u32(4), 3)                   // version
        XCTAssertEqual(u64(8), 1)                   // tensors
        XCTAssertEqual(u64(16), 1)                  // metadata entries
        XCTAssertEqual(u64(24), 1)                  // key length
        XCTAssertEqual(bytes[32], UInt8(ascii: "k"))
        XCTAssertEqual(u32(33), 4)                  // GGUF_TYPE_UINT32
        XCTAssertEqual(u32(37), 7)
        XCTAssertEqual(u64(41), 1)                  // tensor name length
        XCTAssertEqual(bytes[49], UInt8(ascii: "w"))
        XCTAssertEqual(u32(50), 2)                  // n_dims
        XCTAssertEqual(u64(54), 3)                  // ne[0] = columns (innermost)
        XCTAssertEqual(u64(62), 2)                  // ne[1] = rows
        XCTAssertEqual(u32(70), 0)                  // GGML_TYPE_F32
        XCTAssertEqual(u64(74), 0)                  // offset in the data section
        // Header is 82 bytes; the data section starts at the next multiple of 32, and the file ends padded.
        XCTAssertEqual(Float(bitPattern: u32(96)), 1)
        XCTAssertEqual(Float(bitPattern: u32(96 + 20)), 6)
        XCTAssertEqual(bytes.count, 96 + 32)
    }

    func testCustomAlignmentIsWrittenAndHonoured() throws {
        var writer = GGUFWriter(alignment: 64)
        try writer.addTensor("a", Tensor(shape: [3], values: [1, 2, 3]), type: .f32)
        try writer.addTensor("b", Tensor(shape: [1], values: [4]), type: .f32)
        try writer.write(to: path("c.gguf"))
        let file = try GGUFFile(path: path("c.gguf"))
        XCTAssertEqual(file.alignment, 64)
        XCTAssertEqual(file.metadata["general.alignment"], .uint32(64))
        XCTAssertEqual(file.tensors.map { $0.fileOffset % 64 }, [0, 0])
        XCTAssertEqual(try file.tensor("b").array, [4])
    }

    func testWriterRefusesDuplicatesAndBadNames() throws {
        var writer = GGUFWriter()
        try writer.add("a", .bool(true))
        assertError(["a", "twice"]) { try writer.add("a", .bool(false)) }
        assertError(["array of", "string"]) { try writer.add("mixed", .array(.string, [.string("x"), .int32(1)])) }
        try writer.addTensor("t", Tensor(shape: [1]), type: .f32)
        assertError(["t", "twice"]) { try writer.addTensor("t", Tensor(shape: [1]), type: .f32) }
        assertError(["63 bytes"]) { try writer.addTensor(String(repeating: "x", count: 64), Tensor(shape: [1]), type: .f32) }
    }

    func testDamagedFilesAreClearErrors() throws {
        try sampleWriter().write(to: path("good.gguf"))
        let good = try Data(contentsOf: URL(fileURLWithPath: path("good.gguf")))
        // Truncated anywhere: in the metadata, in the tensor infos, in the data.
        for cut in [30, 200, good.count - 30] {
            try good.prefix(cut).write(to: URL(fileURLWithPath: path("cut.gguf")))
            assertError(["cut.gguf", "truncated"]) { _ = try GGUFFile(path: path("cut.gguf")) }
        }
        try Data("not a gguf file at all, just some text".utf8).write(to: URL(fileURLWithPath: path("text.gguf")))
        assertError(["text.gguf", "not a GGUF file"]) { _ = try GGUFFile(path: path("text.gguf")) }
        var wrongVersion = good
        wrongVersion[4] = 9
        try wrongVersion.write(to: URL(fileURLWithPath: path("v9.gguf")))
        assertError(["v9.gguf", "version 9"]) { _ = try GGUFFile(path: path("v9.gguf")) }
        // A huge string length must be refused, not allocated.
        var hugeLength = good
        for i in 24..<32 { hugeLength[i] = 0xFF }
        try hugeLength.write(to: URL(fileURLWithPath: path("huge.gguf")))
        assertError(["huge.gguf", "corrupt"]) { _ = try GGUFFile(path: path("huge.gguf")) }
        assertError(["missing.gguf", "no such GGUF file"]) { _ = try GGUFFile(path: path("missing.gguf")) }
        let file = try GGUFFile(path: path("good.gguf"))
        assertError(["good.gguf", "no tensor nope"]) { _ = try file.tensor("nope") }
        assertError(["good.gguf", "no metadata key nope"]) { _ = try file.value("nope") }
    }

    func testFailedWriteLeavesNothing() throws {
        let writer = try sampleWriter()
        assertError(["no-such-dir/x.gguf"]) { try writer.write(to: path("no-such-dir/x.gguf")) }
        try writer.write(to: path("x.gguf"))
        XCTAssertEqual(try listing(), ["x.gguf"], "no temporary file is left behind")
    }
}
