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

from fixture_support import pin_hash_seed

pin_hash_seed()  # before PEFT: adapter_config.json lists a set

import json
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from fixture_support import (adapter_moves, fixture_ids, load_base, logits_of, max_diff, run, save_adapter,
                             save_tensors)

OUT = Path("Tests/Fixtures/pissa")
TARGETS = ["q_proj", "v_proj", "down_proj"]
SEED = 901
TOLERANCE = 1e-5


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


def write():
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
        ids = fixture_ids(gen)
        logits = logits_of(model, ids)
        converted = OUT / "converted"
        save_adapter(model, converted, path_initial_model_for_weight_conversion=str(initial))
    save_tensors(converted / "expected.safetensors", {"ids": ids.float(), "logits": logits})


def check():
    model = pissa_model()
    stored = load_file(str(OUT / "init.safetensors"))
    fresh = init_tensors(model)
    init_diff = max(max_diff(fresh[k], stored[k]) for k in stored)
    base = dict(load_base().named_parameters())
    # W = residual + delta, and delta has rank 4
    recon = max((stored["residual." + k[6:]] + stored[k] - base[k[6:] + ".weight"]).abs().max().item()
                for k in stored if k.startswith("delta."))
    ranks = {k: torch.linalg.matrix_rank(stored[k]).item() for k in stored if k.startswith("delta.")}
    converted = OUT / "converted"
    config = json.loads((converted / "adapter_config.json").read_text())
    expected = load_file(str(converted / "expected.safetensors"))
    on_original = PeftModel.from_pretrained(load_base(), str(converted))
    diff = max_diff(logits_of(on_original, expected["ids"].long()), expected["logits"])
    moved = adapter_moves(on_original, expected["ids"].long(), expected["logits"])
    print(f"pissa init: rerun max diff {init_diff:.2e}, max|residual + delta - W| {recon:.2e}, ranks {set(ranks.values())}")
    print(f"converted: r {config['r']}, alpha {config['lora_alpha']}, init {config['init_lora_weights']}; "
          f"on the original base max|logits - PiSSA model| = {diff:.2e}; the adapter moves the logits by {moved:.3f}")
    assert init_diff <= TOLERANCE and recon <= 1e-5 and set(ranks.values()) == {4}
    assert config["r"] == 8 and config["lora_alpha"] == 16 and diff <= 1e-4 and moved > 0.05


if __name__ == "__main__":
    run(__doc__, OUT, write, check)
