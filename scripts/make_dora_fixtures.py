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

import os
import sys

# PEFT writes target_modules from a set: fix the string hash seed so adapter_config.json is stable.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse
import json
import math
import shutil
import struct
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent
BASE = "Tests/Fixtures/models/gqa"
OUT = Path("Tests/Fixtures/dora")
BOS = 1
SEED = 801
SEQUENCE_LENGTH = 8
TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
B_STD = 0.1
MAGNITUDE_NOISE = 0.1
TOLERANCE = 1e-5


def load_base():
    return LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")


def randomize(model, seed):
    """lora_A ~ U(±1/√in), lora_B ~ N(0, B_STD), then m = ‖W + s·B·A‖·(1 + N(0, MAGNITUDE_NOISE)), in sorted order."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if ".lora_A." in name:
                bound = 1.0 / math.sqrt(param.shape[1])
                param.copy_(torch.empty(param.shape).uniform_(-bound, bound, generator=gen))
            elif ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * B_STD)
        for name, module in sorted(model.named_modules()):
            if hasattr(module, "lora_magnitude_vector") and "default" in module.lora_magnitude_vector:
                w = module.get_base_layer().weight
                s = module.scaling["default"]
                delta = module.lora_B["default"].weight @ module.lora_A["default"].weight
                norm = torch.linalg.norm(w + s * delta, dim=1)
                noise = 1 + MAGNITUDE_NOISE * torch.randn(norm.shape, generator=gen)
                module.lora_magnitude_vector["default"].weight.copy_(norm * noise)


def save_tensors(path, tensors):
    """F32 safetensors with a sorted header and metadata {"format": "pt"} (byte-stable across runs)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def fixture_ids(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.tensor([BOS]), torch.randint(3, 320, (SEQUENCE_LENGTH - 1,), generator=gen)])


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
    model.save_pretrained(str(directory))
    (directory / "README.md").unlink(missing_ok=True)
    stored = load_file(str(directory / "adapter_model.safetensors"))
    assert sorted("grad." + k for k in stored) == sorted(grads), (sorted(stored), sorted(grads))
    save_tensors(directory / "expected.safetensors",
                 {"ids": ids.float(), "logits": logits, "loss": loss.reshape(1), **grads})
    merged = model.merge_and_unload()
    merged.eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids[None]).logits[0]
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
    diff = (logits - expected["logits"]).abs().max().item()
    grad_diff = max((grads[k] - expected[k]).abs().max().item() for k in grads)
    with model.disable_adapter():
        model.eval()
        with torch.no_grad():
            moved = (model(input_ids=ids[None]).logits[0] - expected["logits"]).abs().max().item()
    # PEFT's merge_and_unload() gives the unmerged model's logits (so merged/ is a fair target for `lora merge`).
    merged = (load_file(str(OUT / "merged" / "merged.safetensors"))["logits"] - expected["logits"]).abs().max().item()
    print(f"dora-mixed: {len(names)} tensors; PEFT reload max|logits - expected| = {diff:.2e}, "
          f"max|grad - expected| = {grad_diff:.2e}, adapter moves the logits by {moved:.3f}, "
          f"merged vs unmerged {merged:.2e}, loss {loss.item():.5f}")
    for name in names:
        print(f"    {name} {list(stored[name].shape)}")
    assert diff <= TOLERANCE and grad_diff <= TOLERANCE and moved > 0.1 and merged < 1e-4


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
        OUT.mkdir(parents=True)
        write()
    check()


if __name__ == "__main__":
    main()
