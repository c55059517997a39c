import ArgumentParser

@main
struct Lora: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "LoRA fine-tuning of LLaMA-architecture models on the CPU.",
        discussion: "Models are Hugging Face Llama directories (config.json, model.safetensors, tokenizer.model).",
        subcommands: [TokenizerCommand.self, Pretrain.self, Finetune.self, Eval.self, Generate.self, Chat.self, Forward.self, Ablate.self, Analyze.self, Bench.self, Merge.self, ExportAdapter.self, Combine.self])

    /// Expands `--config FILE.yaml` before ArgumentParser sees the command line.
    static func main() {
        do {
            main(try ConfigFile.expand(Array(CommandLine.arguments.dropFirst())))
        } catch {
            exit(withError: error)
        }
    }
}
