#!/usr/bin/env python3
"""Golden fixtures for LoRAKit's LoRA adapters, produced by Hugging Face PEFT on the tiny base model
Tests/Fixtures/models/gqa (LlamaForCausalLM, 2 layers, hidden 32, 4 heads / 2 kv heads, vocab 320).

Writes Tests/Fixtures/peft/:

    lora-qv/            r 4, alpha 8, q_proj + v_proj
    lora-all-rslora/    r 8, alpha 16, all seven projections, use_rslora, layers_to_transform [1]
    lora-pattern/       r 4, alpha 8, q/k/o/gate/down with rank_pattern and alpha_pattern
        each: adapter_config.json + adapter_model.safetensors (PEFT's save_pretrained) and expected.safetensors
        with `ids` [T] (F32 values, starts with BOS) and `logits` [T, V] of the PEFT model.
    train3/             three full-batch AdamW steps on 4 Alpaca records (batch 4, wd 0, no clipping)
    train3-wd/          the same data and init with weight decay 0.1, clipping at norm 1.0, 2 micro-batches of 2
    train3-loraplus/    weight decay 0.1, clipping at 1.0, full batch, LoRA+ (create_loraplus_optimizer, ratio 16)
        each: data.json, encoded.json, init/ (starting adapter), expected/ (adapter after 3 steps),
        losses.json, command.txt (the `lora finetune` invocation that must reproduce expected/).

Every adapter gets random lora_A and lora_B (PEFT's default B = 0 would make an adapter a no-op), drawn from
seeded generators, so the fixtures do not depend on PEFT's own initialisation code.

The training loop follows DESIGN §4 exactly: ids = [BOS] + sp.encode(prompt) + sp.encode(output) + [EOS], the
BOS and prompt positions carry no loss, right padding carries no loss and does not attend, position ids start at
0 in every example, loss = sum of next-token cross-entropy over unmasked targets / their count in the whole
optimizer step, torch.optim.AdamW.

Usage:
    /tmp/refenv/bin/python scripts/make_peft_fixtures.py            # regenerate, then verify
    /tmp/refenv/bin/python scripts/make_peft_fixtures.py --check    # only verify the committed fixtures
"""

from fixture_support import pin_hash_seed

pin_hash_seed()  # before PEFT: adapter_config.json lists a set

import json
import math
import struct
from pathlib import Path

import peft
import sentencepiece as spm
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from safetensors.torch import load_file

from fixture_support import (BASE, RECORDS, adapter_moves, base_tokenizer, encode, fixture_ids, fixture_size,
                             load_base, logits_of, make_batch, max_diff, randomize_lora, run, save_adapter,
                             save_tensors)

OUT = Path("Tests/Fixtures/peft")
TOLERANCE = 1e-5      # PyTorch vs PyTorch (reload / rerun); the Swift side uses its own tolerance
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

ADAPTERS = {
    # name: (LoraConfig keyword arguments, seed)
    "lora-qv": (dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), 301),
    "lora-all-rslora": (dict(r=8, lora_alpha=16, target_modules=ALL_TARGETS, use_rslora=True,
                             layers_to_transform=[1]), 302),
    "lora-pattern": (dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "o_proj", "gate_proj", "down_proj"],
                          rank_pattern={"o_proj": 2, "model.layers.1.self_attn.q_proj": 6},
                          alpha_pattern={"down_proj": 3}), 303),
}

TRAIN_TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj"]
TRAIN_SEED = 304
STEPS = 3
LR = 1e-2
TRAINS = {
    # name: (weight decay, max grad norm (0 = no clipping), micro-batches as lists of record indices)
    "train3": (0.0, 0.0, [[0, 1, 2, 3]]),
    "train3-wd": (0.1, 1.0, [[0, 1], [2, 3]]),
    "train3-loraplus": (0.1, 1.0, [[0, 1, 2, 3]]),
}
# LoRA+ (PEFT's create_loraplus_optimizer): lora_B at this multiple of LR, weight decay on both groups
LORAPLUS_RATIOS = {"train3-loraplus": 16.0}


# ---------------------------------------------------------------------------------------------------------------
# Helpers

def check_adapter_file(directory):
    """The file layout of DESIGN §2: F32 tensors base_model.model.model.layers.N.<module>.lora_{A,B}.weight."""
    with open(directory / "adapter_model.safetensors", "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    assert header.pop("__metadata__") == {"format": "pt"}, directory
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        assert name.startswith("base_model.model.model.layers.") and name.endswith((".lora_A.weight", ".lora_B.weight")), name
    config = json.loads((directory / "adapter_config.json").read_text())
    assert list(config) == sorted(config), "adapter_config.json keys are not sorted"
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM" and config["bias"] == "none"
    return header


def scaling_table(model):
    """(module, r, scaling) of every LoRA layer, from PEFT's own objects."""
    rows = []
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            rows.append((name.removeprefix("base_model.model."), module.r["default"], module.scaling["default"]))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# a-c: adapters with expected logits

def expected_scaling(config, module_name):
    """DESIGN §2: s = alpha / r, or alpha / sqrt(r) with rsLoRA; patterns match a dotted suffix of the name."""
    def lookup(pattern, default):
        for key, value in pattern.items():
            if module_name == key or module_name.endswith("." + key):
                return value
        return default
    r = lookup(config.get("rank_pattern", {}), config["r"])
    alpha = lookup(config.get("alpha_pattern", {}), config["lora_alpha"])
    return r, alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def write_adapter_fixture(name, kwargs, seed):
    directory = OUT / name
    directory.mkdir(parents=True)
    torch.manual_seed(seed)
    model = get_peft_model(load_base(), LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **kwargs))
    randomize_lora(model, torch.Generator().manual_seed(seed))
    for module, r, scaling in scaling_table(model):
        want_r, want_scaling = expected_scaling(kwargs, module)
        assert r == want_r and abs(scaling - want_scaling) < 1e-12, (module, r, scaling, want_r, want_scaling)
    ids = fixture_ids(seed)
    logits = logits_of(model, ids)
    moved = adapter_moves(model, ids, logits)
    assert moved > 0.1, f"{name}: the adapter barely changes the logits ({moved})"
    save_adapter(model, directory)
    save_tensors(directory / "expected.safetensors", {"ids": ids.float(), "logits": logits})
    print(f"{name}: adapter moves the logits by max {moved:.3f}")


def check_adapter_fixture(name, kwargs):
    directory = OUT / name
    header = check_adapter_file(directory)
    expected = load_file(str(directory / "expected.safetensors"))
    model = PeftModel.from_pretrained(load_base(), str(directory))
    for module, r, scaling in scaling_table(model):
        want_r, want_scaling = expected_scaling(kwargs, module)
        assert r == want_r and abs(scaling - want_scaling) < 1e-12, (module, r, scaling, want_r, want_scaling)
    layers = sorted({int(key.split(".")[4]) for key in header})
    diff = max_diff(logits_of(model, expected["ids"].long()), expected["logits"])
    print(f"{name:16s} {len(header):2d} tensors, layers {layers}; PEFT reload max|logits - expected| = {diff:.2e}")
    for module, r, scaling in scaling_table(model):
        print(f"    {module:34s} r={r} scaling={scaling:.6f}")
    assert diff <= TOLERANCE, diff
    return diff


# ---------------------------------------------------------------------------------------------------------------
# d-e: three AdamW steps

def summed_loss(model, batch):
    """Sum of next-token cross-entropy over the targets of one micro-batch, and their count."""
    input_ids, mask, positions, labels = batch
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
    targets = labels[:, 1:]
    total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                            ignore_index=-100, reduction="sum")
    return total, int((targets != -100).sum())


def train(init_directory, examples, weight_decay, max_grad_norm, micro_batches, ratio=None):
    """Loads the initial adapter the way `--init-adapter` does and runs STEPS optimizer steps on the same
    batch. Returns the model, the loss of each step (before its update) and the gradient norm (before clipping)."""
    model = PeftModel.from_pretrained(load_base(), str(init_directory), is_trainable=True)
    model.train()  # dropout is 0 everywhere, so train and eval mode compute the same thing
    params = [p for _, p in sorted(model.named_parameters()) if p.requires_grad]
    assert params and all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    if ratio is None:
        optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    else:
        optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=ratio,
                                              loraplus_weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)
    batches = [make_batch([examples[i] for i in indices]) for indices in micro_batches]
    count = sum(int((labels[:, 1:] != -100).sum()) for *_, labels in batches)
    losses, grad_norms = [], []
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for batch in batches:
            total, _ = summed_loss(model, batch)
            # Each micro-batch is scaled by the whole step's target count: the step's loss is one mean.
            (total / count).backward()
            step_loss += total.item() / count
        if max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm).item()
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
        optimizer.step()
        losses.append(step_loss)
        grad_norms.append(norm)
    return model, losses, grad_norms, count


def number(value):
    """0 for off, otherwise with a decimal point (1.0), as the task's command lines spell them."""
    return "0" if value == 0 else repr(float(value))


def command_line(name, weight_decay, max_grad_norm, micro_batches):
    batch_size = len(micro_batches[0])
    loraplus = f" --loraplus-lr-ratio {LORAPLUS_RATIOS[name]:g}" if name in LORAPLUS_RATIOS else ""
    accumulation = f" --grad-accum {len(micro_batches)}" if len(micro_batches) > 1 else ""
    shuffle = " --shuffle false" if len(micro_batches) > 1 else ""
    return (f"lora finetune --base {BASE} --data {OUT}/{name}/data.json --init-adapter {OUT}/{name}/init "
            f"--out OUT --steps {STEPS} --batch-size {batch_size}{accumulation} --lr 1e-2 --lr-schedule constant "
            f"--warmup-steps 0 --weight-decay {weight_decay:g} --max-grad-norm {number(max_grad_norm)} --dropout 0 "
            f"--val-fraction 0 --seed 0{shuffle}{loraplus}")


def command_notes(micro_batches, count):
    notes = ["# Expected (to F32 rounding): OUT/adapter_model.safetensors matches expected/adapter_model.safetensors, the",
             f"# per-step losses match losses.json (loss = summed CE over the step's {count} target tokens / {count}).",
             "# Every step uses the same batch: all 4 records (data.json, file order)."]
    if len(micro_batches) > 1:
        split = " and ".join(str(m) for m in micro_batches)
        notes[-1] = (f"# Assumption: no shuffling; each step's micro-batches are records {split} in file order,")
        notes.append("# each right-padded to its own longest example (padding changes nothing: it neither")
        notes.append("# attends nor carries loss). `--shuffle false` asks the trainer for that order.")
    return "\n".join(notes)


def write_train_fixture(name, sp, weight_decay, max_grad_norm, micro_batches):
    directory = OUT / name
    directory.mkdir(parents=True)
    (directory / "data.json").write_text(json.dumps(RECORDS, indent=2) + "\n")
    examples = [encode(sp, record) for record in RECORDS]
    encoded = [{"ids": ids, "prompt_length": prompt_length, "targets": len(ids) - 1 - prompt_length}
               for ids, prompt_length in examples]
    (directory / "encoded.json").write_text(
        "[\n" + ",\n".join("  " + json.dumps(item, separators=(", ", ": ")) for item in encoded) + "\n]\n")

    torch.manual_seed(TRAIN_SEED)
    init = get_peft_model(load_base(), LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules=TRAIN_TARGETS))
    randomize_lora(init, torch.Generator().manual_seed(TRAIN_SEED))
    save_adapter(init, directory / "init")

    model, losses, grad_norms, count = train(directory / "init", examples, weight_decay, max_grad_norm, micro_batches,
                                             LORAPLUS_RATIOS.get(name))
    save_adapter(model, directory / "expected")
    (directory / "losses.json").write_text(json.dumps({"loss": losses, "grad_norm": grad_norms}, indent=2) + "\n")
    (directory / "command.txt").write_text(command_line(name, weight_decay, max_grad_norm, micro_batches) + "\n"
                                           + command_notes(micro_batches, count) + "\n")


def check_train_fixture(name, sp, weight_decay, max_grad_norm, micro_batches):
    """Re-derives encoded.json from data.json, reruns the training from init/ and compares with expected/."""
    directory = OUT / name
    records = json.loads((directory / "data.json").read_text())
    examples = [encode(sp, record) for record in records]
    encoded = json.loads((directory / "encoded.json").read_text())
    assert [[e["ids"], e["prompt_length"]] for e in encoded] == [list(x) for x in examples], f"{name}: encoded.json"
    for name_ in ("init", "expected"):
        check_adapter_file(directory / name_)
    model, losses, grad_norms, count = train(directory / "init", examples, weight_decay, max_grad_norm, micro_batches,
                                             LORAPLUS_RATIOS.get(name))
    stored = json.loads((directory / "losses.json").read_text())
    expected = load_file(str(directory / "expected" / "adapter_model.safetensors"))
    initial = load_file(str(directory / "init" / "adapter_model.safetensors"))
    state = {key.replace(".default", ""): value for key, value in model.state_dict().items() if ".lora_" in key}
    assert sorted(state) == sorted(expected), "expected/ holds other tensors than the trained model"
    param_diff = max(max_diff(state[k], expected[k]) for k in expected)
    moved = max(max_diff(expected[k], initial[k]) for k in expected)
    loss_diff = max(abs(a - b) for a, b in zip(losses, stored["loss"]))
    # The trained adapter, reloaded from its files by PEFT, gives the logits of the model in memory.
    ids = torch.tensor(examples[0][0])
    reloaded = PeftModel.from_pretrained(load_base(), str(directory / "expected"))
    logit_diff = max_diff(logits_of(reloaded, ids), logits_of(model, ids))
    # Padding must change nothing: the first step's loss equals the one computed example by example, unpadded.
    with torch.no_grad():
        alone = PeftModel.from_pretrained(load_base(), str(directory / "init")).eval()
        unpadded = sum(summed_loss(alone, make_batch([example]))[0].item() for example in examples) / count
    padding_diff = abs(unpadded - stored["loss"][0])
    lengths = [len(ids) for ids, _ in examples]
    print(f"{name:16s} lengths {lengths}, {count} targets, micro-batches {micro_batches}, "
          f"wd {weight_decay}, clip {max_grad_norm}")
    print(f"    losses {['%.6f' % x for x in stored['loss']]}  grad norms {['%.4f' % x for x in stored['grad_norm']]}")
    print(f"    rerun: max|params - expected| = {param_diff:.2e}, max|loss - losses.json| = {loss_diff:.2e}; "
          f"params moved by max {moved:.4f}")
    print(f"    PEFT reload of expected/ max|logits diff| = {logit_diff:.2e}; "
          f"|step-1 loss unpadded one by one - losses.json| = {padding_diff:.2e}")
    assert max(param_diff, loss_diff, logit_diff, padding_diff) <= TOLERANCE
    assert stored["loss"][2] < stored["loss"][0], "training did not lower the loss"
    assert moved > 1e-3
    return max(param_diff, loss_diff, logit_diff, padding_diff)


# ---------------------------------------------------------------------------------------------------------------

def write():
    sp = base_tokenizer()
    for name, (kwargs, seed) in ADAPTERS.items():
        write_adapter_fixture(name, kwargs, seed)
    for name, (weight_decay, max_grad_norm, micro_batches) in TRAINS.items():
        write_train_fixture(name, sp, weight_decay, max_grad_norm, micro_batches)


def check():
    sp = base_tokenizer()
    worst = 0.0
    for name, (kwargs, _) in ADAPTERS.items():
        worst = max(worst, check_adapter_fixture(name, kwargs))
    for name, (weight_decay, max_grad_norm, micro_batches) in TRAINS.items():
        worst = max(worst, check_train_fixture(name, sp, weight_decay, max_grad_norm, micro_batches))
    total = fixture_size(OUT)
    print(f"worst max|diff| {worst:.2e}; total size {total / 1024:.1f} KiB; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}, sentencepiece {spm.__version__}")


if __name__ == "__main__":
    run(__doc__, OUT, write, check, ignore=FutureWarning)  # deprecation notices between PEFT and transformers
