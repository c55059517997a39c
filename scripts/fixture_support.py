"""What the fixture scripts in scripts/ share: the tiny base model, byte-stable safetensors, PEFT adapters with
random nonzero weights, the DESIGN §4 Alpaca encoding, and the start of a `make_X_fixtures.py [--check]` run.

The scripts run as `/tmp/refenv/bin/python scripts/make_X_fixtures.py` from the repository root; Python puts the
script's own folder (scripts/) first on sys.path, so `import fixture_support` finds this file.

torch, transformers and sentencepiece are imported inside the functions that use them, not at the top: a script
calls pin_hash_seed() first, which may restart the interpreter, and importing torch before that would cost the
import (seconds on a busy machine) twice.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Relative to the repository root (start() chdirs there), so adapter_config.json records a portable
# base_model_name_or_path.
BASE = "Tests/Fixtures/models/gqa"
BOS, EOS = 1, 2
VOCAB = 320             # the gqa model's vocabulary; ids 0-2 are unk, BOS, EOS
SEQUENCE_LENGTH = 8     # tokens of a forward fixture's single sequence (BOS included)
B_STD = 0.1             # lora_B ~ N(0, B_STD): large enough that every adapter visibly moves the logits
PAD_FILL = 0            # token id placed in padded slots; never attended, never a target
SIZE_LIMIT = 1024 * 1024  # each fixture set stays under 1 MiB


# ---------------------------------------------------------------------------------------------------------------
# Running a script

def pin_hash_seed():
    """PEFT stores target_modules as a set and writes list(set): restart the interpreter with PYTHONHASHSEED=0 so
    the order in adapter_config.json (and so the bytes of the fixture) does not change from run to run. Call it
    before importing anything heavy."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)


def parse_check_args(doc):
    """The command line every fixture script takes: no argument regenerates then verifies, --check only verifies."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify the fixtures already on disk")
    return parser.parse_args()


def start(ignore=Warning):
    """Works from the repository root on one thread (reproducible sums), with transformers' logging and progress bars
    and the warnings of class `ignore` silenced."""
    import torch
    import transformers
    os.chdir(REPO)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=ignore)


def run(doc, out, write, check, ignore=Warning):
    """A fixture script's main: parses --check, start(ignore)s, unless --check empties `out` and calls write(), then
    check() (which verifies what is on disk and fails with an assertion)."""
    args = parse_check_args(doc)
    start(ignore)
    if not args.check:
        fresh_directory(out)
        write()
    check()


def fresh_directory(path):
    """An empty `path` (what was there is removed): regenerating never leaves stale files behind."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def fixture_size(path):
    """Bytes of all files under `path`; fails when the set reaches SIZE_LIMIT."""
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert total < SIZE_LIMIT, f"{path}: {total} bytes"
    return total


# ---------------------------------------------------------------------------------------------------------------
# Tensors

def finish_gguf(writer):
    """Writes a gguf-py GGUFWriter's header, metadata and tensors to its file and closes it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def save_tensors(path, tensors, metadata=None):
    """F32 safetensors (torch tensors or numpy arrays) with a sorted header, so regenerating gives identical bytes
    (safetensors' own writer orders the metadata arbitrarily). `metadata` defaults to {"format": "pt"}. The file is
    read back and compared."""
    import numpy as np
    from safetensors.numpy import load_file
    arrays = {name: _f32(value) for name, value in tensors.items()}
    header, blobs, offset = {"__metadata__": metadata or {"format": "pt"}}, [], 0
    for name in sorted(arrays):
        data = arrays[name].tobytes()
        header[name] = {"dtype": "F32", "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes with spaces
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    reread = load_file(str(path))
    assert sorted(reread) == sorted(arrays) and all(np.array_equal(reread[n], arrays[n]) for n in arrays), path


def _f32(value):
    """A contiguous little-endian F32 numpy array of a torch tensor or an array-like."""
    import numpy as np
    if hasattr(value, "detach"):
        import torch
        value = value.detach().to(torch.float32).cpu().numpy()
    return np.ascontiguousarray(value, dtype="<f4")


def max_diff(a, b):
    """max |a - b| of two torch tensors, as a float."""
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------
# The base model and adapters on it

def load_base():
    """The frozen F32 gqa base; eager attention (the plain softmax(QK^T)V a CPU implementation computes)."""
    import torch
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")


def base_tokenizer():
    """The gqa model's SentencePiece tokenizer."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(REPO / BASE / "tokenizer.model"))
    assert sp.bos_id() == BOS and sp.eos_id() == EOS
    return sp


def fixture_ids(source, length=SEQUENCE_LENGTH):
    """BOS followed by length - 1 random non-special pieces, drawn from `source`: a seed or a torch.Generator."""
    import torch
    gen = torch.Generator().manual_seed(source) if isinstance(source, int) else source
    return torch.cat([torch.tensor([BOS]), torch.randint(3, VOCAB, (length - 1,), generator=gen)])


def logits_of(model, ids):
    """Logits [T, V] of one sequence ids [T], in eval mode without gradients."""
    import torch
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids[None]).logits[0].float()


def adapter_moves(model, ids, logits):
    """max |logits - logits with the adapter disabled|: how far a PEFT model's adapter moves the base."""
    with model.disable_adapter():
        return max_diff(logits_of(model, ids), logits)


def randomize_lora(model, gen, b_std=B_STD):
    """lora_A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a=sqrt(5)) range), lora_B ~ N(0, b_std), drawn
    module by module in sorted name order from `gen` (PEFT's default B = 0 would make an adapter a no-op)."""
    import torch
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if ".lora_A." in name:
                bound = 1.0 / math.sqrt(param.shape[1])
                param.copy_(torch.empty(param.shape).uniform_(-bound, bound, generator=gen))
            elif ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * b_std)


def save_adapter(model, directory, **options):
    """PEFT's own writer (adapter_config.json + adapter_model.safetensors); its generated model card is dropped."""
    model.save_pretrained(str(directory), **options)
    (directory / "README.md").unlink(missing_ok=True)
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["adapter_config.json", "adapter_model.safetensors"], names


# ---------------------------------------------------------------------------------------------------------------
# Alpaca records encoded as DESIGN §4 says

PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.\n\n"
                   "### Instruction:\n{instruction}\n\n### Response:\n")

# Short records: two with an input, one with "input": "" and one without the key (both mean no input).
RECORDS = [
    {"instruction": "Name a primary color.", "output": "Red."},
    {"instruction": "Add the two numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Reverse the word.", "input": "sol", "output": "los"},
    {"instruction": "Say hello.", "input": "", "output": "Hello there!"},
]


def prompt_of(record):
    text = record.get("input", "")
    if text:
        return PROMPT_INPUT.format(instruction=record["instruction"], input=text)
    return PROMPT_NO_INPUT.format(instruction=record["instruction"])


def encode(sp, record):
    """(ids, prompt length): ids = [BOS] + encode(prompt) + encode(output) + [EOS]; the prompt length counts
    encode(prompt) only (BOS excluded), so targets are ids[i] for i >= 1 + prompt length."""
    prompt = sp.encode(prompt_of(record), out_type=int)
    output = sp.encode(record["output"], out_type=int)
    return [BOS] + prompt + output + [EOS], len(prompt)


def make_batch(examples):
    """Right-padded (B, T) input ids, attention mask, position ids and labels (-100 = no loss).
    labels[b, i] is the token at position i when it is a target, so the loss compares logits[:, i-1] with it."""
    import torch
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), PAD_FILL, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for b, (ids, prompt_length) in enumerate(examples):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        mask[b, :len(ids)] = 1
        labels[b, 1 + prompt_length:len(ids)] = torch.tensor(ids[1 + prompt_length:])
    positions = torch.arange(length)[None].expand(len(examples), length)
    return input_ids, mask, positions, labels
