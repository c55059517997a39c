// swift-tools-version:6.0
// LoRAKit: CPU LoRA fine-tuning of LLaMA-architecture models, OpenBLAS for the matrix products.
import PackageDescription

let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "LoRAKit",
    products: [
        .executable(name: "lora", targets: ["lora"]),
        .library(name: "LoRAKit", targets: ["InstructionTuning", "Targeting", "MiniGPT", "Checkpoints", "Tensors", "Tokenizer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // C shims over the two system libraries.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        // AVX2 + FMA kernels chosen at run time (the Swift targets compile for baseline x86-64).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "CSentencePiece",
                cxxSettings: [.unsafeFlags(["-std=c++17"])],
                linkerSettings: [.linkedLibrary("sentencepiece"), .linkedLibrary("sentencepiece_train")]),

        // Library targets, one per module of DESIGN.md §1; arrows point one way.
        .target(name: "Tensors", dependencies: ["CBLAS", "CKernels"], swiftSettings: optimize),
        .target(name: "Checkpoints", dependencies: ["Tensors"], swiftSettings: optimize),
        .target(name: "Tokenizer", dependencies: ["CSentencePiece"]),
        .target(name: "MiniGPT", dependencies: ["Checkpoints", "Tensors", "Tokenizer"], swiftSettings: optimize),
        .target(name: "Targeting", dependencies: ["MiniGPT", "Checkpoints", "Tensors", "Tokenizer"], swiftSettings: optimize),
        .target(name: "InstructionTuning", dependencies: ["Targeting", "MiniGPT", "Checkpoints", "Tensors", "Tokenizer"],
                swiftSettings: optimize),
        .executableTarget(name: "lora", dependencies: [
            "InstructionTuning", "Targeting", "MiniGPT", "Checkpoints", "Tensors", "Tokenizer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Yams", package: "Yams"),
        ]),

        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "CKernels"]),
        .testTarget(name: "CheckpointsTests", dependencies: ["Checkpoints", "Tensors"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer"]),
        .testTarget(name: "MiniGPTTests", dependencies: ["MiniGPT", "Checkpoints", "Tensors", "Tokenizer"]),
        .testTarget(name: "TargetingTests", dependencies: ["Targeting", "MiniGPT", "Checkpoints", "Tensors"]),
        .testTarget(name: "InstructionTuningTests",
                    dependencies: ["InstructionTuning", "Targeting", "MiniGPT", "Checkpoints", "Tensors", "Tokenizer"]),
        // Runs the built `lora` executable as a user would.
        .testTarget(name: "CLITests", dependencies: ["lora", "Checkpoints", "Tensors"]),

        // libFuzzer targets, one per parser of user files (scripts/fuzz.sh builds them with -sanitize=fuzzer);
        // an ordinary build makes each replay the input files it is given.
        .target(name: "FuzzSupport"),
        .executableTarget(name: "FuzzSafeTensors", dependencies: ["FuzzSupport", "Checkpoints", "Tensors"]),
        .executableTarget(name: "FuzzModelConfig", dependencies: ["FuzzSupport", "Checkpoints", "Tensors"]),
        .executableTarget(name: "FuzzAdapterConfig", dependencies: ["FuzzSupport", "Targeting", "Tensors"]),
        .executableTarget(name: "FuzzDataset", dependencies: ["FuzzSupport", "InstructionTuning", "Tensors"]),
        .executableTarget(name: "FuzzTemplate", dependencies: ["FuzzSupport", "InstructionTuning", "Tensors"]),
        .executableTarget(name: "FuzzGGUF", dependencies: ["FuzzSupport", "MiniGPT", "Checkpoints", "Tensors", "Tokenizer"]),
    ],
    // Kernels pass raw buffers to parallel loops by design; Swift 6's strict Sendable checking buys nothing there.
    swiftLanguageModes: [.v5]
)
