import ArgumentParser
import Checkpoints
import Foundation
import Targeting

struct ExportAdapter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-adapter",
        abstract: "Write a PEFT adapter as a llama.cpp GGUF LoRA adapter (llama-cli --lora FILE).",
        discussion: """
            The file is what llama.cpp's convert_lora_to_gguf.py writes: general.type = adapter, adapter.type = lora, \
            adapter.lora.alpha, tensors <base tensor>.lora_a / .lora_b, q/k rows in llama.cpp's RoPE order. Use it \
            on a GGUF of the same base (lora merge --format gguf with no change, or llama.cpp's converter). Modules \
            whose scale is not alpha/r (rsLoRA, alpha_pattern, a DIR:WEIGHT) carry their scale in lora_b.
            """)

    @Option(help: ArgumentHelp("The PEFT adapter directory, optionally with a weight: DIR or DIR:0.5.", valueName: "dir[:weight]"))
    var adapter: String

    @Option(help: "Base model the adapter was trained on, a directory or GGUF file (its config fixes the shapes).")
    var base: String

    @Option(help: "Output .gguf file.")
    var out: String

    @Option(help: "Element type of lora_a and lora_b: f32, f16 or bf16.")
    var dtype: DType = .f32

    @Flag(help: "Replace --out if it exists.")
    var overwrite = false

    func run() throws {
        let report = try GGUFAdapterExport.export(adapterArgument: adapter, base: base, out: out,
                                                  type: GGMLType(dtype), overwrite: overwrite)
        var line = "wrote \(report.modules) LoRA module(s), alpha \(report.alpha), to \(out)"
        if !report.rescaledModules.isEmpty {
            line += "; \(report.rescaledModules.count) module(s) carry their own scale in lora_b"
        }
        printError(line)
    }
}
