#!/usr/bin/env python3
"""Checks that Hugging Face PEFT and LoRAKit agree on an adapter: PEFT loads ADAPTER_DIR onto BASE_DIR, runs IDS,
and its logits are compared with the ones `lora forward` wrote.

    lora forward --base BASE_DIR --adapter ADAPTER_DIR --ids 1,5,17 --out /tmp/lora-logits.safetensors
    /tmp/refenv/bin/python scripts/check_peft_roundtrip.py ADAPTER_DIR BASE_DIR /tmp/lora-logits.safetensors 1,5,17

IDS is a comma-separated list (as `lora forward --ids` takes it), or a .safetensors file holding `ids` (F32 values,
as in Tests/Fixtures/peft/*/expected.safetensors). The logits file must hold `logits`, F32 [T, vocab].
Works for LoRA and AdaLoRA (peft_type ADALORA, e.g. from `lora finetune --adalora`) adapters.
Prints max |diff|; exits 0 when it is <= --tolerance (default 1e-4), 1 when larger, 2 on bad arguments or files.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaForCausalLM


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_ids(text):
    path = Path(text)
    if text.endswith(".safetensors"):
        if not path.is_file():
            fail(f"ids file {text} does not exist")
        tensors = load_file(text)
        if "ids" not in tensors or tensors["ids"].dim() != 1:
            fail(f"{text} holds no 1-D tensor `ids` (found {sorted(tensors)})")
        values = tensors["ids"].tolist()
        if any(v != int(v) for v in values):
            fail(f"{text}: `ids` holds non-integer values")
        return [int(v) for v in values]
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"IDS must be comma-separated integers like 1,5,17 or a .safetensors file, got {text!r}")
    if not ids:
        fail("IDS is empty")
    return ids


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", help="PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    parser.add_argument("base", help="Hugging Face base model directory")
    parser.add_argument("logits", help="safetensors file written by `lora forward` (key `logits`, F32 [T, vocab])")
    parser.add_argument("ids", help="token ids, e.g. 1,5,17, or a .safetensors file with `ids`")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max |diff| (default 1e-4)")
    args = parser.parse_args()

    for directory, required in ((args.adapter, "adapter_config.json"), (args.base, "config.json")):
        if not (Path(directory) / required).is_file():
            fail(f"{directory} has no {required}")
    if not Path(args.logits).is_file():
        fail(f"logits file {args.logits} does not exist")
    ids = parse_ids(args.ids)

    lora = load_file(args.logits)
    if "logits" not in lora:
        fail(f"{args.logits} holds no tensor `logits` (found {sorted(lora)})")
    lora_logits = lora["logits"]
    if lora_logits.dtype != torch.float32:
        fail(f"{args.logits}: `logits` is {lora_logits.dtype}, expected F32")

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    base = LlamaForCausalLM.from_pretrained(args.base, dtype=torch.float32, attn_implementation="eager")
    if max(ids) >= base.config.vocab_size or min(ids) < 0:
        fail(f"IDS holds ids outside 0..<{base.config.vocab_size}")
    model = PeftModel.from_pretrained(base, args.adapter).eval()
    with torch.no_grad():
        peft_logits = model(input_ids=torch.tensor([ids])).logits[0].float()

    if tuple(lora_logits.shape) != tuple(peft_logits.shape):
        print(f"FAIL: {args.logits} `logits` has shape {list(lora_logits.shape)}, PEFT gives "
              f"{list(peft_logits.shape)} for {len(ids)} ids")
        return 1
    diff = (lora_logits - peft_logits).abs()
    worst = diff.max().item()
    position, token = divmod(int(diff.argmax()), diff.shape[1])
    config = json.loads((Path(args.adapter) / "adapter_config.json").read_text())
    if config.get("peft_type") == "ADALORA":
        # AdaLoRA: r is unused; the kept ranks come from rank_pattern (init_r where a module has no entry).
        kept = {k: sum(v) for k, v in (config.get("rank_pattern") or {}).items()}
        rank = f"AdaLoRA init_r {config.get('init_r')}, target_r {config.get('target_r')}, kept ranks {sorted(kept.values())}"
    else:
        rank = f"r {config.get('r')}"
    print(f"adapter {args.adapter} ({rank}, alpha {config.get('lora_alpha')}, "
          f"targets {sorted(config.get('target_modules') or [])}) on {args.base}, {len(ids)} tokens")
    print(f"max |lora - peft| = {worst:.3e} at position {position}, token {token} "
          f"(peft {peft_logits[position, token].item():.6f}, lora {lora_logits[position, token].item():.6f}); "
          f"max |peft| = {peft_logits.abs().max().item():.3f}")
    if not worst <= args.tolerance:  # also catches NaN
        print(f"FAIL: max |diff| {worst:.3e} > tolerance {args.tolerance:g}")
        return 1
    print(f"OK: within tolerance {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
