// libFuzzer target: the PEFT adapter_config.json parser (Targeting.LoRAConfig) and what is derived from it:
// the adapted modules of a 4-layer base, the rank, alpha and scale of each (rank_pattern / alpha_pattern are
// regular expressions), the initialisation.
import Foundation
import FuzzSupport
import Targeting
import Tensors

let scratch = ScratchFile(extension: "json")

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzAdapterConfig(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    scratch.write(bytes, count)
    let config: LoRAConfig
    do {
        config = try LoRAConfig.load(path: scratch.path)
    } catch let error as LoRAKitError {
        precondition(error.message.hasPrefix(scratch.path), "the error does not name the file: \(error.message)")
        return 0
    } catch {
        preconditionFailure("not a LoRAKitError: \(error)")
    }
    _ = try? config.initialization()
    guard let sites = try? config.sites(layerCount: 4) else { return 0 }
    for site in sites {
        let rank = config.rank(for: site.moduleName)
        precondition(rank > 0, "\(site.moduleName): rank \(rank) passed validation")
        _ = config.scale(for: site.moduleName)
    }
    // Written back, it must load as the same configuration.
    if let data = try? config.jsonData() {
        scratch.write(Array(data), data.count)
        let again = try? LoRAConfig.load(path: scratch.path)
        precondition(again == config, "adapter config does not survive a write and a read")
    }
    return 0
}

runFuzzer(fuzzAdapterConfig)
