import Foundation
import XCTest
import Tensors
@testable import Checkpoints

final class SafeTensorsTests: TemporaryDirectoryTestCase {
    // MARK: round trips

    func testF32RoundTripKeepsValuesShapesOrderAndMetadata() throws {
        let b = Tensor(shape: [2, 3], values: [1, -2, 3.5, .pi, -0.0, 1e-30])
        let a = Tensor(shape: [3], values: [7, 8, 9])
        let scalar = Tensor(shape: [], values: [42])
        let empty = Tensor(shape: [0, 4])
        let file = path("round.safetensors")
        try SafeTensorsWriter.write([("b", b), ("a", a), ("scalar", scalar), ("empty", empty)],
                                    metadata: ["format": "pt", "path/with": "slash"], to: file)

        let st = try SafeTensorsFile(path: file)
        XCTAssertEqual(st.names, ["a", "b", "empty", "scalar"])
        XCTAssertEqual(st.metadata, ["format": "pt", "path/with": "slash"])
        // Laid out in the order given: b first, then a.
        XCTAssertEqual(st.info("b"), TensorInfo(name: "b", dtype: .f32, shape: [2, 3], byteRange: 0..<24))
        XCTAssertEqual(st.info("a")?.byteRange, 24..<36)
        XCTAssertNil(st.info("c"))
        XCTAssertEqual(try st.tensor("b").array.map(\.bitPattern), b.array.map(\.bitPattern))
        XCTAssertEqual(try st.tensor("a").shape, [3])
        XCTAssertEqual(try st.tensor("scalar").array, [42])
        XCTAssertEqual(try st.tensor("scalar").shape, [])
        XCTAssertEqual(try st.tensor("empty").shape, [0, 4])
        XCTAssertEqual(try st.tensor("empty").count, 0)
    }

    func testHeaderIsSortedAndPaddedToEightBytes() throws {
        let file = path("layout.safetensors")
        try SafeTensorsWriter.write([("zeta", Tensor(shape: [1], values: [1])), ("alpha", Tensor(shape: [1], values: [2]))],
                                    metadata: ["format": "pt"], to: file)
        let raw = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        let length = raw[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(length % 8, 0)
        XCTAssertEqual(raw.count, 8 + length + 8)
        let header = String(decoding: raw[8..<(8 + length)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{\"__metadata__\":{\"format\":\"pt\"},\"alpha\":"), header)
        XCTAssertLessThan(header.range(of: "\"alpha\"")!.lowerBound, header.range(of: "\"zeta\"")!.lowerBound)
        XCTAssertEqual(header.trimmingCharacters(in: .whitespaces).last, "}")
        XCTAssertEqual(bytes(ofFloats: [1, 2]), Array(raw[(8 + length)...]))
    }

    func testEmptyFileHasEmptyObjectHeader() throws {
        let file = path("empty.safetensors")
        try SafeTensorsWriter.write([], metadata: [:], to: file)
        let st = try SafeTensorsFile(path: file)
        XCTAssertEqual(st.names, [])
        XCTAssertEqual(st.metadata, [:])
    }

    func testF16WriteRoundsToNearestEvenAndReadsBackExactly() throws {
        let exact: [Float] = [0, -0.0, 1, -2, 0.5, 1024, 65504, 6.1035156e-05, 5.9604645e-08, .infinity, -.infinity]
        let rounding: [Float] = [1 + 0x1p-11, 1 + 3 * 0x1p-11, 0.1, 70000, 1e-9]
        let wanted: [Float] = [1, 1 + 0x1p-9, Float(Float16(0.1)), .infinity, 0]
        let file = path("half.safetensors")
        try SafeTensorsWriter.write([("x", Tensor(shape: [exact.count + rounding.count], values: exact + rounding))],
                                    dtype: .f16, metadata: [:], to: file)
        let st = try SafeTensorsFile(path: file)
        XCTAssertEqual(st.info("x")?.dtype, .f16)
        XCTAssertEqual(st.info("x")?.byteRange.count, 2 * (exact.count + rounding.count))
        let back = try st.tensor("x").array
        XCTAssertEqual(back.map(\.bitPattern), (exact + wanted).map(\.bitPattern))
    }

    func testBF16WriteRoundsToNearestEvenAndReadsBackExactly() throws {
        // Largest finite bf16, smallest bf16 subnormal.
        let exact: [Float] = [0, -0.0, 1, -2, 0.5, Float(bitPattern: 0x7F7F_0000), Float(bitPattern: 0x0001_0000), .infinity]
        // Halfway between 1 and 1+2^-7 rounds down to even; halfway above 1+2^-7 rounds up to 1+2^-6.
        let rounding: [Float] = [1 + 0x1p-8, 1 + 3 * 0x1p-8, 1 + 0x1p-8 + 0x1p-20, 0.1, 3.4e38]
        let wanted: [Float] = [1, 1 + 0x1p-6, 1 + 0x1p-7, Float(bitPattern: 0x3DCD_0000), .infinity]
        let file = path("bf16.safetensors")
        let values = exact + rounding + [.nan]
        try SafeTensorsWriter.write([("x", Tensor(shape: [values.count], values: values))],
                                    dtype: .bf16, metadata: [:], to: file)
        let back = try SafeTensorsFile(path: file).tensor("x").array
        XCTAssertEqual(back.prefix(exact.count).map(\.bitPattern), exact.map(\.bitPattern))
        XCTAssertEqual(back[exact.count..<(exact.count + rounding.count)].map(\.bitPattern), wanted.map(\.bitPattern))
        XCTAssertTrue(back.last!.isNaN)
    }

    func testReadsHandMadeHalfAndBFloatBits() throws {
        // F16: 1.0, -2.0, smallest subnormal; BF16: 1.0, -2.0, 0.15625 (0x3E20).
        let header = #"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[6,12]}}"#
        let file = try writeRaw("bits.safetensors", header: header,
                                data: bytes(ofHalves: [0x3C00, 0xC000, 0x0001, 0x3F80, 0xC000, 0x3E20]))
        let st = try SafeTensorsFile(path: file)
        XCTAssertEqual(try st.tensor("h").array, [1, -2, 0x1p-24])
        XCTAssertEqual(try st.tensor("b").array, [1, -2, 0.15625])
    }

    // MARK: memory mapping

    func testAlignedF32IsBorrowedFromTheMappingAndKeepsItAlive() throws {
        let file = path("mapped.safetensors")
        try SafeTensorsWriter.write([("a", Tensor(shape: [3], values: [1, 2, 3])),
                                     ("b", Tensor(shape: [2, 2], values: [4, 5, 6, 7]))], metadata: [:], to: file)
        weak var weakFile: SafeTensorsFile?
        var b: Tensor?
        do {
            let st = try SafeTensorsFile(path: file)
            weakFile = st
            let a = try st.tensor("a")
            b = try st.tensor("b")
            // Both point into one mapping, exactly as far apart as their data offsets.
            XCTAssertEqual(UnsafeRawPointer(b!.data) - UnsafeRawPointer(a.data), 12)
            XCTAssertEqual(try st.tensor("a").data, a.data, "a second read must not copy")
        }
        XCTAssertNotNil(weakFile, "a borrowed tensor must keep its file mapped")
        XCTAssertEqual(b?.array, [4, 5, 6, 7])
        b = nil
        XCTAssertNil(weakFile, "the mapping is released with its last tensor")
    }

    func testUnalignedF32IsCopiedCorrectly() throws {
        // A header of length 1 (mod 4) puts the data at an odd offset in the file.
        let header = #"{"u":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let padded = header + String(repeating: " ", count: (5 - header.utf8.count % 4) % 4)
        XCTAssertNotEqual((8 + padded.utf8.count) % 4, 0)
        let file = try writeRaw("unaligned.safetensors", header: padded, data: bytes(ofFloats: [1.5, -3.25]))
        let st = try SafeTensorsFile(path: file)
        let u = try st.tensor("u")
        XCTAssertEqual(u.array, [1.5, -3.25])
        XCTAssertEqual(Int(bitPattern: u.data) % 4, 0)
    }

    func testWritingABorrowedTensorNeverReachesTheFile() throws {
        let file = path("private.safetensors")
        try SafeTensorsWriter.write([("w", Tensor(shape: [2], values: [1, 2]))], metadata: [:], to: file)
        let before = try Data(contentsOf: URL(fileURLWithPath: file))
        let st = try SafeTensorsFile(path: file)
        try st.tensor("w")[0] = 99
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: file)), before)
    }

    // MARK: bad files

    func testTruncatedFiles() throws {
        let empty = path("empty.safetensors")
        try Data().write(to: URL(fileURLWithPath: empty))
        assertError([empty, "0 bytes", "too short"]) { _ = try SafeTensorsFile(path: empty) }
        let five = path("five.safetensors")
        try Data([1, 2, 3, 4, 5]).write(to: URL(fileURLWithPath: five))
        assertError([five, "5 bytes"]) { _ = try SafeTensorsFile(path: five) }

        // A valid header whose data was cut short.
        let header = #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        let cut = try writeRaw("cut.safetensors", header: header, data: bytes(ofFloats: [1, 2]))
        assertError([cut, "tensor w", "[0, 16]", "beyond the end of the data (8 bytes"]) { _ = try SafeTensorsFile(path: cut) }
    }

    func testAbsurdHeaderLength() throws {
        let huge = try writeRaw("huge.safetensors", header: "{}", headerLength: UInt64.max)
        assertError([huge, "header length 18446744073709551615", "impossible"]) { _ = try SafeTensorsFile(path: huge) }
        let longer = try writeRaw("longer.safetensors", header: "{}", headerLength: 3)
        assertError([longer, "header length 3", "10 bytes"]) { _ = try SafeTensorsFile(path: longer) }
        // Over the 100 MB cap even if the file were that big.
        let capped = try writeRaw("capped.safetensors", header: "{}", headerLength: 100_000_001)
        assertError([capped, "header length 100000001"]) { _ = try SafeTensorsFile(path: capped) }
        XCTAssertThrowsError(try SafeTensorsFile(path: path("absent.safetensors"))) { error in
            XCTAssertTrue((error as? LoRAKitError)?.message.contains("absent.safetensors: cannot open") == true, "\(error)")
        }
    }

    func testHeaderThatIsNotAJSONObject() throws {
        let garbage = try writeRaw("garbage.safetensors", header: "{\"w\": [1, 2")
        assertError([garbage, "not valid JSON"]) { _ = try SafeTensorsFile(path: garbage) }
        let list = try writeRaw("list.safetensors", header: "[1, 2]   ")
        assertError([list, "not a JSON object"]) { _ = try SafeTensorsFile(path: list) }
        let entry = try writeRaw("entry.safetensors", header: #"{"w": 3}"#)
        assertError([entry, "tensor w", "not a JSON object"]) { _ = try SafeTensorsFile(path: entry) }
        let meta = try writeRaw("meta.safetensors", header: #"{"__metadata__": {"format": 1}}"#)
        assertError([meta, "__metadata__ entry format is not a string"]) { _ = try SafeTensorsFile(path: meta) }
    }

    func testUnsupportedDTypes() throws {
        for dtype in ["I8", "F64"] {
            let header = #"{"emb":{"dtype":"\#(dtype)","shape":[2],"data_offsets":[0,2]}}"#
            let file = try writeRaw("\(dtype).safetensors", header: header, data: [0, 0])
            assertError(["\(file): tensor emb has unsupported dtype \(dtype) (LoRAKit reads F32, F16, BF16)"]) {
                _ = try SafeTensorsFile(path: file)
            }
        }
    }

    func testMissingOrMistypedFields() throws {
        let cases: [(String, String)] = [
            (#"{"t":{"shape":[1],"data_offsets":[0,4]}}"#, "has no dtype"),
            (#"{"t":{"dtype":"F32","data_offsets":[0,4]}}"#, "has no shape"),
            (#"{"t":{"dtype":"F32","shape":[1]}}"#, "has no data_offsets"),
            (#"{"t":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#, "dtype that is not a string"),
            (#"{"t":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#, "shape that is not a list"),
            (#"{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, "shape dimension -1"),
            (#"{"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,4]}}"#, "shape dimension 2.5"),
            (#"{"t":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, "shape dimension true"),
            (#"{"t":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}"#, "shape dimension \"1\""),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, "expected [begin, end]"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, "expected [begin, end]"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":"0-4"}}"#, "expected [begin, end]"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, "[8, 4] with begin > end"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, "[-4, 0] with begin > end or negative"),
        ]
        for (index, (header, message)) in cases.enumerated() {
            let file = try writeRaw("bad\(index).safetensors", header: header, data: [UInt8](repeating: 0, count: 16))
            assertError(["\(file): tensor t ", message]) { _ = try SafeTensorsFile(path: file) }
        }
    }

    func testOffsetsOutsideTheFile() throws {
        let header = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[1000,1004]}}"#
        let file = try writeRaw("outside.safetensors", header: header, data: bytes(ofFloats: [1]))
        assertError([file, "tensor w", "[1000, 1004] beyond the end of the data (4 bytes"]) { _ = try SafeTensorsFile(path: file) }
        let maxed = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775803,9223372036854775807]}}"#
        let file2 = try writeRaw("maxed.safetensors", header: maxed, data: bytes(ofFloats: [1]))
        assertError([file2, "tensor w", "beyond the end of the data"]) { _ = try SafeTensorsFile(path: file2) }
    }

    func testSizeShapeMismatchAndOverflow() throws {
        let header = #"{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}}"#
        let file = try writeRaw("mismatch.safetensors", header: header, data: [UInt8](repeating: 0, count: 12))
        assertError(["\(file): tensor w has 8 bytes of data but shape [2, 3] of BF16 needs 12"]) { _ = try SafeTensorsFile(path: file) }
        // 2^62 · 2^62 elements would wrap around to 0 bytes without the overflow check.
        let overflow = #"{"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}}"#
        let file2 = try writeRaw("overflow.safetensors", header: overflow)
        assertError([file2, "tensor w", "too large"]) { _ = try SafeTensorsFile(path: file2) }
    }

    func testOverlappingTensorsAreRejected() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        let file = try writeRaw("overlap.safetensors", header: header, data: [UInt8](repeating: 0, count: 12))
        assertError([file, "tensor b overlaps tensor a"]) { _ = try SafeTensorsFile(path: file) }
    }

    func testUnknownTensorName() throws {
        let file = path("one.safetensors")
        try SafeTensorsWriter.write([("w", Tensor(shape: [1]))], metadata: [:], to: file)
        assertError(["\(file): no tensor named q"]) { _ = try SafeTensorsFile(path: file).tensor("q") }
    }

    func testWriterRejectsDuplicateAndReservedNames() throws {
        let file = path("dup.safetensors")
        assertError([file, "tensor w is listed twice"]) {
            try SafeTensorsWriter.write([("w", Tensor(shape: [1])), ("w", Tensor(shape: [2]))], metadata: [:], to: file)
        }
        assertError([file, "__metadata__"]) {
            try SafeTensorsWriter.write([("__metadata__", Tensor(shape: [1]))], metadata: [:], to: file)
        }
        XCTAssertEqual(try listing(), [])
    }
}
