#!/usr/bin/env python3
"""Golden fixtures for LoRAKit's PiSSA initialisation (`lora finetune --init pissa`), produced by Hugging Face PEFT
(`init_lora_weights="pissa"`) on the tiny base model Tests/Fixtures/models/gqa.

Writes Tests/Fixtures/pissa/:

    init.safetensors    for r 4, alpha 8 on q_proj, v_proj (out 16 < in 32) and down_proj (in 48) of both layers:
                        `delta.<module>` = s·B₀·A₀ [out, in] (the top-4 part of W that PEFT moves into the adapter)
                        and `residual.<module>` [out, in], the base weight PEFT trains on (W − s·B₀·A₀).
                        Products rather than A₀ and B₀: the signs of singular vectors depend on the LAPACK.
    converted/          PEFT's save_pretrained(path_initial_model_for_weight_conversion=...) of that PiSSA adapter
                        after its A and B were moved (as training would): a rank-8, alpha-16 LoRA for the ORIGINAL
                        base; expected.safetensors holds `ids` [8] and the `logits` [8, V] of the PiSSA model
                        (residual base + moved A, B), which the converted adapter on the original base must give.

Usage:
    /tmp/refenv/bin/python scripts/make_pissa_fixtures.py            # regenerate, then verify
    /tmp/refenv/bin/python scripts/make_pissa_fixtures.py --check    # only verify the committed fixtures
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse
import shutil
import struct
import json
import tempfile
import warnings
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent
BASE = "Tests/Fixtures/models/gqa"
OUT = Path("Tests/Fixtures/pissa")
TARGETS = ["q_proj", "v_proj", "down_proj"]
SEED = 901
BOS = 1
TOLERANCE = 1e-5


def load_base():
    return LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")


def save_tensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def pissa_model():
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                        init_lora_weights="pissa")
    return get_peft_model(load_base(), config)


def lora_modules(model):
    for name, module in sorted(model.named_modules()):
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            yield name.removeprefix("base_model.model."), module


def init_tensors(model):
    tensors = {}
    for name, module in lora_modules(model):
        s = module.scaling["default"]
        tensors["delta." + name] = s * module.lora_B["default"].weight @ module.lora_A["default"].weight
        tensors["residual." + name] = module.get_base_layer().weight.detach().clone()
    return tensors


def logits_of(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids[None]).logits[0]


def write():
    OUT.mkdir(parents=True)
    model = pissa_model()
    save_tensors(OUT / "init.safetensors", init_tensors(model))
    with tempfile.TemporaryDirectory() as tmp:
        initial = Path(tmp) / "pissa_init"
        model.peft_config["default"].init_lora_weights = True   # as PEFT's PiSSA example does before saving
        model.save_pretrained(str(initial))
        model.peft_config["default"].init_lora_weights = "pissa"
        gen = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            for _, param in sorted(model.named_parameters()):
                if ".lora_" in _:
                    param.add_(0.05 * torch.randn(param.shape, generator=gen))
        ids = torch.cat([torch.tensor([BOS]), torch.randint(3, 320, (7,), generator=gen)])
        logits = logits_of(model, ids)
        converted = OUT / "converted"
        model.save_pretrained(str(converted), path_initial_model_for_weight_conversion=str(initial))
    (converted / "README.md").unlink(missing_ok=True)
    save_tensors(converted / "expected.safetensors", {"ids": ids.float(), "logits": logits})


def check():
    model = pissa_model()
    stored = load_file(str(OUT / "init.safetensors"))
    fresh = init_tensors(model)
    init_diff = max((fresh[k] - stored[k]).abs().max().item() for k in stored)
    base = dict(load_base().named_parameters())
    # W = residual + delta, and delta has rank 4
    recon = max((stored["residual." + k[6:]] + stored[k] - base[k[6:] + ".weight"]).abs().max().item()
                for k in stored if k.startswith("delta."))
    ranks = {k: torch.linalg.matrix_rank(stored[k]).item() for k in stored if k.startswith("delta.")}
    converted = OUT / "converted"
    config = json.loads((converted / "adapter_config.json").read_text())
    expected = load_file(str(converted / "expected.safetensors"))
    on_original = PeftModel.from_pretrained(load_base(), str(converted))
    diff = (logits_of(on_original, expected["ids"].long()) - expected["logits"]).abs().max().item()
    with on_original.disable_adapter():
        moved = (logits_of(on_original, expected["ids"].long()) - expected["logits"]).abs().max().item()
    print(f"pissa init: rerun max diff {init_diff:.2e}, max|residual + delta - W| {recon:.2e}, ranks {set(ranks.values())}")
    print(f"converted: r {config['r']}, alpha {config['lora_alpha']}, init {config['init_lora_weights']}; "
          f"on the original base max|logits - PiSSA model| = {diff:.2e}; the adapter moves the logits by {moved:.3f}")
    assert init_diff <= TOLERANCE and recon <= 1e-5 and set(ranks.values()) == {4}
    assert config["r"] == 8 and config["lora_alpha"] == 16 and diff <= 1e-4 and moved > 0.05


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify the fixtures already on disk")
    args = parser.parse_args()
    os.chdir(REPO)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    if not args.check:
        if OUT.exists():
            shutil.rmtree(OUT)
        write()
    check()


if __name__ == "__main__":
    main()
