import Foundation
import Tensors
import XCTest
@testable import Checkpoints

/// llama.cpp's quantized types that LoRAKit reads but does not write, against gguf-py
/// (Tests/Fixtures/gguf-quant/dequant.gguf, scripts/make_gguf_quant_fixtures.py): random blocks of every type, and
/// what `gguf.quants.dequantize` makes of them.
final class GGMLDequantizationTests: TemporaryDirectoryTestCase {
    static let readOnlyTypes: [GGMLType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/gguf-quant/dequant.gguf").path

    /// Every value, bit for bit: codes, packed sub-block scales, zero, subnormal and F16-max scales.
    func testEveryTypeDequantizesAsGGUFPyDoes() throws {
        let file = try GGUFFile(path: Self.fixture)
        for type in Self.readOnlyTypes {
            let info = try XCTUnwrap(file.info(type.ggmlName), type.ggmlName)
            XCTAssertEqual(info.type, type)
            XCTAssertEqual(info.shape, [2, 512], type.ggmlName)
            let read = try file.tensor(type.ggmlName).array
            let want = try file.tensor(type.ggmlName + ".dequantized").array
            XCTAssertEqual(want.count, 1024)
            let mismatches = (0..<want.count).filter { read[$0].bitPattern != want[$0].bitPattern }
            if let first = mismatches.first {
                XCTFail("\(type.ggmlName): \(mismatches.count) of 1024 values differ from gguf-py, the first at [\(first / 512), \(first % 512)]: \(read[first]) against \(want[first])")
            }
            XCTAssertGreaterThan(Set(want).count, 100, "\(type.ggmlName): the fixture exercises many codes")
        }
    }

    /// The block sizes are gguf-py's `GGML_QUANT_SIZES`, and the tensors sit where those sizes put them.
    func testByteCountMatchesTheFileLayout() throws {
        let sizes: [GGMLType: (values: Int, bytes: Int)] = [
            .q4_0: (32, 18), .q4_1: (32, 20), .q5_0: (32, 22), .q5_1: (32, 24),
            .q2_K: (256, 84), .q3_K: (256, 110), .q4_K: (256, 144), .q5_K: (256, 176), .q6_K: (256, 210),
        ]
        let file = try GGUFFile(path: Self.fixture)
        for type in Self.readOnlyTypes {
            let size = try XCTUnwrap(sizes[type])
            XCTAssertEqual(type.blockSize, size.values, type.ggmlName)
            XCTAssertEqual(type.byteCount(elements: 1024), 1024 / size.values * size.bytes, type.ggmlName)
            XCTAssertFalse(type.isWritable, type.ggmlName)
            // gguf-py lays each tensor out right after the previous one, padded to 32 bytes.
            let raw = try XCTUnwrap(file.info(type.ggmlName))
            let next = try XCTUnwrap(file.info(type.ggmlName + ".dequantized"))
            XCTAssertEqual(next.fileOffset, raw.fileOffset + (type.byteCount(elements: raw.count) + 31) / 32 * 32, type.ggmlName)
        }
        XCTAssertEqual(GGMLType.allCases.filter(\.isWritable), [.f32, .f16, .q8_0, .bf16])
    }

    /// A type LoRAKit does not read is refused with the tensor's name, the type's ggml name and what is read.
    func testUnsupportedTypesAreRefusedNamingTheTensor() throws {
        var writer = GGUFWriter()
        let name = "blk.0.attn_q.weight"
        try writer.addTensor(name, Tensor(shape: [1, 256]), type: .f32)
        try writer.write(to: path("f32.gguf"))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path("f32.gguf")))
        // After the name: n_dims (u32), ne (2 × u64), then the ggml type (u32).
        let nameEnd = try XCTUnwrap(bytes.range(of: Data(name.utf8))).upperBound
        for (rawType, named) in [(UInt32(16), "ggml type 16 (IQ2_XXS)"), (99, "ggml type 99 (unknown)")] {
            withUnsafeBytes(of: rawType.littleEndian) { bytes.replaceSubrange(nameEnd + 20..<nameEnd + 24, with: $0) }
            try bytes.write(to: URL(fileURLWithPath: path("other.gguf")))
            assertError([path("other.gguf"), "tensor \(name) has \(named)",
                         "LoRAKit reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K–Q6_K"]) {
                _ = try GGUFFile(path: path("other.gguf"))
            }
        }
    }

    /// Rows that are not whole blocks are a corrupt file, not a crash.
    func testRowsOfPartialBlocksAreRefused() throws {
        var writer = GGUFWriter()
        try writer.addTensor("w", Tensor(shape: [2, 256]), type: .f32)
        try writer.write(to: path("f32.gguf"))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path("f32.gguf")))
        let nameEnd = 24 + 8 + 1  // the 24-byte header (no metadata), the name's u64 length and "w"
        // ne = [128, 4] (rows of 128 values: half a Q4_K block) in the same 2 KB, type Q4_K.
        var fields: [UInt8] = []
        for value: UInt64 in [128, 4] { withUnsafeBytes(of: value.littleEndian) { fields += $0 } }
        withUnsafeBytes(of: GGMLType.q4_K.rawValue.littleEndian) { fields += $0 }
        bytes.replaceSubrange(nameEnd + 4..<nameEnd + 24, with: fields)
        try bytes.write(to: URL(fileURLWithPath: path("q4_K.gguf")))
        assertError(["tensor w [4, 128] is Q4_K, which stores whole blocks of 256 values per row"]) {
            _ = try GGUFFile(path: path("q4_K.gguf"))
        }
    }

    /// LoRAKit has no quantizer for these types: asking the writer for one is an error, not a wrong file.
    func testWriterRefusesTypesItCannotQuantize() throws {
        var writer = GGUFWriter()
        assertError(["GGUF tensor blk.0.attn_q.weight", "cannot write", "Q4_K", "F32, F16, BF16, Q8_0"]) {
            try writer.addTensor("blk.0.attn_q.weight", Tensor(shape: [2, 256]), type: .q4_K)
        }
        for type in Self.readOnlyTypes {
            assertError([type.ggmlName]) { try writer.addTensor("w", Tensor(shape: [2, 256]), type: type) }
        }
        XCTAssertTrue(writer.tensors.isEmpty)
        for type in GGMLType.writable { XCTAssertNoThrow(try writer.addTensor("\(type)", Tensor(shape: [2, 256]), type: type)) }
    }
}
