#!/usr/bin/env python3
"""Golden fixtures for LoRAKit's DoRA adapters, produced by Hugging Face PEFT (use_dora=True) on the tiny base model
Tests/Fixtures/models/gqa (LlamaForCausalLM, 2 layers, hidden 32, 4 heads / 2 kv heads, vocab 320).

Writes Tests/Fixtures/dora/:

    dora-mixed/     r 4, alpha 8, DoRA on q_proj, v_proj, o_proj, down_proj (o and down add into the residual stream)
        adapter_config.json + adapter_model.safetensors (PEFT's save_pretrained: lora_A, lora_B and
        lora_magnitude_vector per module), expected.safetensors with `ids` [T] (F32, starts with BOS), `logits`
        [T, V] of the PEFT model, `loss` [1] (mean next-token cross-entropy over ids[1:]) and the gradient of that
        loss for every adapter tensor, under the adapter file's own names with a `grad.` prefix.
    merged/         PEFT's merge_and_unload() of dora-mixed: `logits` [T, V] of the merged model (merged.safetensors).

lora_A, lora_B are random and every magnitude is PEFT's initial ‖W + s·B·A‖ times (1 + N(0, 0.1)), so neither
the LoRA part nor the magnitude is a no-op and a test that ignores either fails.

Usage:
    /tmp/refenv/bin/python scripts/make_dora_fixtures.py            # regenerate, then verify
    /tmp/refenv/bin/python scripts/make_dora_fixtures.py --check    # only verify the committed fixtures
"""

from fixture_support import pin_hash_seed

pin_hash_seed()  # before PEFT: adapter_config.json lists a set

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from fixture_support import (adapter_moves, fixture_ids, load_base, logits_of, max_diff, randomize_lora, run,
                             save_adapter, save_tensors)

OUT = Path("Tests/Fixtures/dora")
SEED = 801
TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
MAGNITUDE_NOISE = 0.1
TOLERANCE = 1e-5


def randomize(model, seed):
    """lora_A ~ U(±1/√in), lora_B ~ N(0, 0.1) (randomize_lora), then m = ‖W + s·B·A‖·(1 + N(0, MAGNITUDE_NOISE)),
    in sorted order, all from one generator."""
    gen = torch.Generator().manual_seed(seed)
    randomize_lora(model, gen)
    with torch.no_grad():
        for name, module in sorted(model.named_modules()):
            if hasattr(module, "lora_magnitude_vector") and "default" in module.lora_magnitude_vector:
                w = module.get_base_layer().weight
                s = module.scaling["default"]
                delta = module.lora_B["default"].weight @ module.lora_A["default"].weight
                norm = torch.linalg.norm(w + s * delta, dim=1)
                noise = 1 + MAGNITUDE_NOISE * torch.randn(norm.shape, generator=gen)
                module.lora_magnitude_vector["default"].weight.copy_(norm * noise)


def logits_and_gradients(model, ids):
    """Logits, the mean next-token loss over ids[1:], and d(loss)/d(adapter tensor) keyed by the file's names."""
    model.train()  # dropout is 0: train and eval compute the same thing
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids[None]).logits[0]
    loss = F.cross_entropy(logits[:-1], ids[1:], reduction="mean")
    loss.backward()
    grads = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight -> file name of the tensor
            key = name.replace(".default.weight", ".weight") if ".lora_magnitude_vector." not in name \
                else name.replace(".lora_magnitude_vector.default.weight", ".lora_magnitude_vector")
            grads["grad." + key] = param.grad.detach().clone()
    return logits.detach(), loss.detach(), grads


def write():
    directory = OUT / "dora-mixed"
    directory.mkdir(parents=True)
    torch.manual_seed(SEED)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                        use_dora=True)
    model = get_peft_model(load_base(), config)
    randomize(model, SEED)
    ids = fixture_ids(SEED)
    logits, loss, grads = logits_and_gradients(model, ids)
    save_adapter(model, directory)
    stored = load_file(str(directory / "adapter_model.safetensors"))
    assert sorted("grad." + k for k in stored) == sorted(grads), (sorted(stored), sorted(grads))
    save_tensors(directory / "expected.safetensors",
                 {"ids": ids.float(), "logits": logits, "loss": loss.reshape(1), **grads})
    merged = model.merge_and_unload()
    merged_logits = logits_of(merged, ids)
    (OUT / "merged").mkdir()
    save_tensors(OUT / "merged" / "merged.safetensors", {"ids": ids.float(), "logits": merged_logits})


def check():
    directory = OUT / "dora-mixed"
    expected = load_file(str(directory / "expected.safetensors"))
    stored = load_file(str(directory / "adapter_model.safetensors"))
    names = sorted(stored)
    assert any(n.endswith(".lora_magnitude_vector") for n in names), names
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    model = PeftModel.from_pretrained(load_base(), str(directory), is_trainable=True)
    ids = expected["ids"].long()
    logits, loss, grads = logits_and_gradients(model, ids)
    diff = max_diff(logits, expected["logits"])
    grad_diff = max(max_diff(grads[k], expected[k]) for k in grads)
    moved = adapter_moves(model, ids, expected["logits"])
    # PEFT's merge_and_unload() gives the unmerged model's logits (so merged/ is a fair target for `lora merge`).
    merged = max_diff(load_file(str(OUT / "merged" / "merged.safetensors"))["logits"], expected["logits"])
    print(f"dora-mixed: {len(names)} tensors; PEFT reload max|logits - expected| = {diff:.2e}, "
          f"max|grad - expected| = {grad_diff:.2e}, adapter moves the logits by {moved:.3f}, "
          f"merged vs unmerged {merged:.2e}, loss {loss.item():.5f}")
    for name in names:
        print(f"    {name} {list(stored[name].shape)}")
    assert diff <= TOLERANCE and grad_diff <= TOLERANCE and moved > 0.1 and merged < 1e-4


if __name__ == "__main__":
    run(__doc__, OUT, write, check)
