import ArgumentParser

@main
struct Lora: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "LoRA fine-tuning of LLaMA-architecture models on the CPU.",
        subcommands: [])
}
