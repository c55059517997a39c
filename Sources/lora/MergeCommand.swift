import ArgumentParser
import Tokenizer
import Checkpoints
import Foundation
import Targeting

extension ExportFormat: ExpressibleByArgument {}
extension DType: ExpressibleByArgument {}
extension ExportDType: ExpressibleByArgument {}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge adapters into the base model and write it for transformers (hf) or llama.cpp (gguf).",
        discussion: """
            Computes W + s·B·A in F32 for every adapted projection (several adapters add up, each times its \
            weight), writes the model atomically, reads it back and checks it: a short forward of base+adapters \
            against the merged model, whose max logit difference is printed. Without --adapter the base itself is \
            written (e.g. the GGUF a `lora export-adapter` file is applied to). The GGUF carries the SentencePiece \
            vocabulary; llama.cpp tokenizes like SentencePiece for BPE models (LLaMA's), unigram models may be \
            segmented differently by llama.cpp.
            """)

    @Option(help: "Base model: a Hugging Face directory (config.json, model.safetensors, tokenizer.model) or a llama.cpp GGUF file.")
    var base: String

    @Option(help: ArgumentHelp("A PEFT adapter directory, optionally with a weight: DIR or DIR:0.5. Repeat to merge several; none converts the base itself.",
                               valueName: "dir[:weight]"))
    var adapter: [String] = []

    @Option(help: "Output: a directory for --format hf, a .gguf file for --format gguf.")
    var out: String

    @Option(help: "hf: a Hugging Face model directory; gguf: one llama.cpp file (architecture llama).")
    var format: ExportFormat = .hf

    @Option(help: "Element type of the written matrices: f32, f16 or bf16; for gguf also q8_0 (llama.cpp's 8-bit blocks). GGUF keeps norms in F32.")
    var dtype: ExportDType = .f32

    @Flag(help: "Replace --out if it exists.")
    var overwrite = false

    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        let report = try ModelExport.merge(base: base, adapterArguments: adapter, out: out, format: format,
                                           dtype: dtype, overwrite: overwrite)
        let what = adapter.isEmpty ? "converted the base model (no adapter)"
            : "merged \(adapter.count) adapter(s) into \(report.mergedProjections) projection(s)"
        printError("\(what); wrote \(format.rawValue) (\(dtype.rawValue)) to \(report.path)")
        print("self-check: max |logit(base+adapter) - logit(merged)| = \(report.maxDifference) over \(report.checkTokens.count) tokens (largest |logit| \(report.maxLogit))")
        // llama.cpp segments every SentencePiece vocabulary by merging pieces by score, which is exactly what a
        // BPE model does but only approximates a unigram model's best segmentation.
        if format == .gguf, let tokenizer = try? SentencePieceTokenizer(modelPath: base + "/tokenizer.model"),
           tokenizer.modelType == .unigram {
            printError("note: \(tokenizer.modelPath) is a unigram model; llama.cpp tokenizes it with BPE-style merges, so some texts get other ids than `lora tokenizer encode` gives (a BPE tokenizer, `lora tokenizer train --model-type bpe`, the default, tokenizes identically)")
        }
    }
}
