import Tensors

/// A frozen projection weight `[out, in]`: F32, or NF4 (QLoRA's 4-bit base).
///
/// The model's products go through here, so the rest of the model does not care how the base is stored. Only the
/// forward and the input gradient exist: a quantized base is never trained.
public enum FrozenWeight {
    case f32(Tensor)
    case nf4(NF4Matrix)

    /// out[rows, outF] (+)= input[rows, inF] · Wᵀ.
    @inline(__always)
    public func linear(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int,
                       inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
        switch self {
        case .f32(let w):
            GEMM.linear(out: out, input: input, weight: w.data, rows: rows, inFeatures: inFeatures,
                        outFeatures: outFeatures, accumulate: accumulate)
        case .nf4(let w):
            NF4GEMM.linear(out: out, input: input, weight: w, rows: rows, accumulate: accumulate)
        }
    }

    /// dInput[rows, inF] (+)= dOut[rows, outF] · W.
    @inline(__always)
    public func linearBackwardInput(dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, rows: Int,
                                    inFeatures: Int, outFeatures: Int, accumulate: Bool = true) {
        switch self {
        case .f32(let w):
            GEMM.linearBackwardInput(dInput: dInput, dOut: dOut, weight: w.data, rows: rows, inFeatures: inFeatures,
                                     outFeatures: outFeatures, accumulate: accumulate)
        case .nf4(let w):
            NF4GEMM.linearBackwardInput(dInput: dInput, dOut: dOut, weight: w, rows: rows, accumulate: accumulate)
        }
    }

    /// The weight as an F32 tensor: itself, or a new dequantized copy of an NF4 matrix (costs the F32 memory).
    public var f32Tensor: Tensor {
        switch self {
        case .f32(let w): return w
        case .nf4(let w): return w.dequantized()
        }
    }

    /// Rows `range` of W as F32, row-major into `panel` (`columns` values per row): copied, or dequantized.
    public func copyRows(_ range: Range<Int>, into panel: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32(let w):
            let columns = w.shape[1]
            panel.update(from: w.data + range.lowerBound * columns, count: range.count * columns)
        case .nf4(let w):
            w.dequantize(rows: range, columns: 0..<w.columns, into: panel, ldPanel: w.columns)
        }
    }

    /// Identifies the storage (for caches keyed on the weight): the same value while the same memory holds W.
    public var storageIdentity: UInt {
        switch self {
        case .f32(let w): return UInt(bitPattern: w.data)
        case .nf4(let w): return UInt(bitPattern: ObjectIdentifier(w))
        }
    }

    /// Bytes the weight occupies in memory.
    public var storageBytes: Int {
        switch self {
        case .f32(let w): return w.bytes
        case .nf4(let w): return w.storageBytes
        }
    }

    /// [out, in].
    public var shape: [Int] {
        switch self {
        case .f32(let w): return w.shape
        case .nf4(let w): return [w.rows, w.columns]
        }
    }

    /// Number of weights.
    public var count: Int {
        switch self {
        case .f32(let w): return w.count
        case .nf4(let w): return w.count
        }
    }

    public var isQuantized: Bool {
        if case .nf4 = self { return true }
        return false
    }
}

/// How the base's seven projections are stored: `--quantize none|nf4` and `--double-quant true|false`.
///
/// Embeddings, norms and the LM head always stay F32.
public enum BaseQuantization: Equatable, Sendable, CustomStringConvertible {
    case none
    /// 4-bit NormalFloat in blocks of 64, with the block scales double-quantized (8 bits, blocks of 256) or F32.
    case nf4(doubleQuant: Bool)

    /// The schemes `--quantize` accepts.
    public static let schemes = ["none", "nf4"]

    /// Parses `--quantize SCHEME` (and `--double-quant`, which only NF4 uses).
    public init(scheme: String, doubleQuant: Bool = true) throws {
        switch scheme.lowercased() {
        case "none": self = .none
        case "nf4": self = .nf4(doubleQuant: doubleQuant)
        default:
            throw LoRAKitError("--quantize: unknown scheme '\(scheme)' (choices: \(Self.schemes.joined(separator: ", ")))")
        }
    }

    /// The weight of projection `label` stored this way (an NF4 copy is made, the F32 tensor can be dropped).
    public func store(_ tensor: Tensor, label: String) throws -> FrozenWeight {
        switch self {
        case .none: return .f32(tensor)
        case .nf4(let doubleQuant): return .nf4(try NF4Matrix(quantizing: tensor, doubleQuant: doubleQuant, label: label))
        }
    }

    public var description: String {
        switch self {
        case .none: return "none"
        case .nf4(let doubleQuant): return doubleQuant ? "nf4 (double quantization)" : "nf4"
        }
    }
}
