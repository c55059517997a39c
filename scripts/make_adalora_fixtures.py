#!/usr/bin/env python3
"""AdaLoRA fixtures from PEFT (Tests/Fixtures/adalora), on the tiny base Tests/Fixtures/models/gqa.

    pruned/     a trained-looking PEFT ADALORA adapter (q, v, down; init_r 4) whose rank_pattern keeps 0-4 triplets
                per module, saved by PEFT's save_pretrained (tensors resized to the kept triplets), and
                expected.safetensors: ids [8] and PEFT's logits [8, 320] for them.
    train4/     four full-batch AdamW steps of PEFT's AdaLoRA loop (loss with the orthogonal regulariser,
                clip_grad_norm_, optimizer.step(), update_and_allocate(global_step), zero_grad) from init/ (all
                triplets, random nonzero E) with tinit 0, tfinal 2, deltaT 1, total_step 4 — so the steps are: no
                mask, a cubic-budget mask, the final forced mask to target_r, a fixed-pattern mask; expected/ is
                PEFT's saved adapter after the run (rank_pattern and resized tensors), losses.json the loss of each
                step (cross-entropy mean + orth_reg_weight · R) and the budget of each step.

The training data is the four Alpaca records of Tests/Fixtures/peft/train3 (data.json copied here), encoded as
DESIGN §4 says (fixture_support.encode, the encoder scripts/make_peft_fixtures.py uses too).

Usage:
    /tmp/refenv/bin/python scripts/make_adalora_fixtures.py            # regenerate, then verify
    /tmp/refenv/bin/python scripts/make_adalora_fixtures.py --check    # only verify the committed fixtures
"""

from fixture_support import pin_hash_seed

pin_hash_seed()  # before PEFT: adapter_config.json lists a set

import json
from pathlib import Path

import peft
import torch
import transformers
from peft import AdaLoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from fixture_support import (RECORDS, adapter_moves, base_tokenizer, encode, fixture_ids, fixture_size, load_base,
                             logits_of, make_batch, max_diff, run, save_adapter, save_tensors)

OUT = Path("Tests/Fixtures/adalora")
TARGETS = ["q_proj", "v_proj", "down_proj"]
TOLERANCE = 1e-5
LR = 1e-2
STEPS = 4
MAX_GRAD_NORM = 1.0
# The pruned fixture's pattern: module -> kept triplets of init_r = 4 (one module keeps none).
PATTERN = {
    "model.layers.0.self_attn.q_proj": [True, False, True, False],
    "model.layers.0.self_attn.v_proj": [True, True, True, True],
    "model.layers.0.mlp.down_proj": [False, False, True, False],
    "model.layers.1.self_attn.q_proj": [False, True, True, True],
    "model.layers.1.self_attn.v_proj": [False, False, False, False],
    "model.layers.1.mlp.down_proj": [True, False, False, True],
}


def adalora_config(**extra):
    return AdaLoraConfig(task_type="CAUSAL_LM", init_r=4, target_r=2, lora_alpha=8, lora_dropout=0.0,
                         target_modules=TARGETS, **extra)


def randomize(model, seed, e_std):
    """A ~ N(0, 0.3), B ~ N(0, 0.3), E ~ N(0, e_std) (PEFT's own init has E = 0: a no-op adapter), module by
    module in sorted parameter-name order from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
            elif ".lora_E." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * e_std)


def write_pruned():
    directory = OUT / "pruned"
    torch.manual_seed(0)
    model = get_peft_model(load_base(), adalora_config(total_step=100, tinit=10, tfinal=20, deltaT=5))
    randomize(model, 401, 1.0)
    rank_pattern = {}
    with torch.no_grad():
        for module, kept in PATTERN.items():
            key = f"{module}.lora_E.default"
            parameter = dict(model.base_model.model.named_parameters())[key]
            parameter.masked_fill_(~torch.tensor(kept)[:, None], 0.0)   # as RankAllocator.mask_to_budget
            rank_pattern[key] = kept
    model.peft_config["default"].rank_pattern = rank_pattern
    ids = fixture_ids(402)
    logits = logits_of(model, ids)
    moved = adapter_moves(model, ids, logits)
    assert moved > 0.1, moved
    save_adapter(model, directory)
    save_tensors(directory / "expected.safetensors", {"ids": ids.float(), "logits": logits})
    print(f"pruned: adapter moves the logits by max {moved:.3f}")


def check_pruned():
    directory = OUT / "pruned"
    expected = load_file(str(directory / "expected.safetensors"))
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["rank_pattern"] == {f"{m}.lora_E": k for m, k in PATTERN.items()}
    tensors = load_file(str(directory / "adapter_model.safetensors"))
    for module, kept in PATTERN.items():
        assert tensors[f"base_model.model.{module}.lora_E"].shape == (sum(kept), 1), module
    model = PeftModel.from_pretrained(load_base(), str(directory))
    diff = max_diff(logits_of(model, expected["ids"].long()), expected["logits"])
    print(f"pruned: PEFT reload max|logits - expected| = {diff:.2e}")
    assert diff <= TOLERANCE
    return diff


def train(init_directory, examples):
    """PEFT's AdaLoRA loop (docs of AdaLoraModel.update_and_allocate): loss (with the orthogonal regulariser, added
    by AdaLoraModel.forward when labels are given) → backward → clip → optimizer.step() →
    update_and_allocate(global_step) → zero_grad, global_step counting from 0."""
    model = PeftModel.from_pretrained(load_base(), str(init_directory), is_trainable=True)
    model.train()
    params = [p for _, p in sorted(model.named_parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    input_ids, mask, positions, labels = make_batch(examples)
    allocator = model.base_model.rankallocator
    losses, budgets = [], []
    for global_step in range(STEPS):
        loss = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        model.base_model.update_and_allocate(global_step)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        budgets.append(allocator.budget_schedule(global_step)[0])
    return model, losses, budgets


def write_train(sp):
    directory = OUT / "train4"
    directory.mkdir(parents=True)
    (directory / "data.json").write_text(json.dumps(RECORDS, indent=2) + "\n")
    torch.manual_seed(0)
    init = get_peft_model(load_base(), adalora_config(total_step=STEPS, tinit=0, tfinal=2, deltaT=1))
    randomize(init, 403, 0.5)
    save_adapter(init, directory / "init")
    examples = [encode(sp, record) for record in RECORDS]
    model, losses, budgets = train(directory / "init", examples)
    save_adapter(model, directory / "expected")
    (directory / "losses.json").write_text(json.dumps({"loss": losses, "budget": budgets}, indent=2) + "\n")


def check_train(sp):
    directory = OUT / "train4"
    examples = [encode(sp, record) for record in json.loads((directory / "data.json").read_text())]
    model, losses, budgets = train(directory / "init", examples)
    stored = json.loads((directory / "losses.json").read_text())
    expected = load_file(str(directory / "expected" / "adapter_model.safetensors"))
    config = json.loads((directory / "expected" / "adapter_config.json").read_text())
    pattern = config["rank_pattern"]
    assert pattern and sum(sum(v) for v in pattern.values()) == 2 * len(pattern), pattern
    assert any(sum(v) != 2 for v in pattern.values()), "every module kept target_r: the pattern shows no allocation"
    # The trained model's state, resized as PEFT's save does, equals the stored tensors.
    state = {k.replace(".default", ""): v for k, v in model.state_dict().items() if ".lora_" in k}
    worst = 0.0
    for key, value in expected.items():
        module = key.removeprefix("base_model.model.").rsplit(".", 1)[0]
        kept = torch.tensor(pattern[f"{module}.lora_E"])
        full = state[key]
        resized = full[:, kept] if key.endswith("lora_B") else full[kept]
        worst = max(worst, max_diff(resized, value))
    loss_diff = max(abs(a - b) for a, b in zip(losses, stored["loss"]))
    ids = torch.tensor(examples[0][0])
    reloaded = PeftModel.from_pretrained(load_base(), str(directory / "expected"))
    logit_diff = max_diff(logits_of(reloaded, ids), logits_of(model, ids))
    print(f"train4: losses {['%.6f' % x for x in stored['loss']]}, budgets {budgets}, pattern "
          f"{ {k.split('layers.')[1]: sum(v) for k, v in pattern.items()} }")
    print(f"    rerun: max|params - expected| = {worst:.2e}, max|loss diff| = {loss_diff:.2e}, "
          f"PEFT reload of expected/ vs trained model: max|logits diff| = {logit_diff:.2e}")
    assert budgets == stored["budget"] and max(worst, loss_diff, logit_diff) <= TOLERANCE
    return max(worst, loss_diff, logit_diff)


def write():
    write_pruned()
    write_train(base_tokenizer())


def check():
    worst = max(check_pruned(), check_train(base_tokenizer()))
    total = fixture_size(OUT)
    print(f"worst {worst:.2e}; total size {total / 1024:.1f} KiB; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}")


if __name__ == "__main__":
    run(__doc__, OUT, write, check)
