import Checkpoints

/// The sizes a forward pass needs, read once from a `LlamaConfig`.
public struct ModelDimensions: Sendable, Equatable {
    public var vocab: Int
    public var dim: Int
    public var ffnDim: Int
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var normEps: Float
    public var ropeTheta: Double
    public var maxPositions: Int
    public var tiedEmbeddings: Bool

    public var qDim: Int { heads * headDim }
    public var kvDim: Int { kvHeads * headDim }

    public init(_ config: LlamaConfig) {
        vocab = config.vocabSize
        dim = config.hiddenSize
        ffnDim = config.intermediateSize
        layers = config.numHiddenLayers
        heads = config.numAttentionHeads
        kvHeads = config.numKeyValueHeads
        headDim = config.headDim
        normEps = Float(config.rmsNormEps)
        ropeTheta = Double(config.ropeTheta)
        maxPositions = config.maxPositionEmbeddings
        tiedEmbeddings = config.tieWordEmbeddings
    }

    /// Parameters in the matrices an activation passes through per token (LM head included, embedding not).
    public var matrixParameters: Int {
        layers * (dim * qDim * 2 + dim * kvDim * 2 + dim * ffnDim * 3) + vocab * dim
    }
}
