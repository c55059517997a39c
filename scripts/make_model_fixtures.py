#!/usr/bin/env python3
"""Golden fixtures for LoRAKit's model loading and forward pass, produced by Hugging Face transformers.

Writes tiny random LlamaForCausalLM checkpoints (HF layout: config.json, safetensors, tokenizer.model) and the
logits transformers computes for them into Tests/Fixtures/models/NAME/expected.safetensors:

    gqa           hidden 32, 4 heads / 2 kv heads, head_dim 8, untied, F32, config spells rope_parameters
    tied          hidden 24, 4 heads / 4 kv heads, head_dim 6, tied embeddings, F32, config spells top-level rope_theta
    headdim       hidden 32, 4 heads / 1 kv head, head_dim 12 (q_proj out 48 != hidden), F32
    sharded-bf16  gqa's weights cast to BF16, saved in >= 2 shards with model.safetensors.index.json
    f16           gqa's weights cast to F16, one file

Expected outputs of the BF16/F16 models are computed from their weights upcast to F32, so an F32 implementation
that converts on load must reproduce them. Tests never run Python; this script only regenerates the fixtures.

Usage:
    /tmp/refenv/bin/python scripts/make_model_fixtures.py            # regenerate and verify
    /tmp/refenv/bin/python scripts/make_model_fixtures.py --check    # only verify the committed fixtures
"""

import argparse
import io
import json
import random
import shutil
import sys
from pathlib import Path

import sentencepiece as spm
import torch
import transformers
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from fixture_support import save_tensors

ROOT = Path(__file__).resolve().parent.parent / "Tests" / "Fixtures" / "models"
VOCAB_SIZE = 320
BOS, EOS, UNK = 1, 2, 0
# Right-padded batch: B = 2 sequences of lengths 7 and 5, T = 7. Padded slots hold PAD_FILL (never attended).
LENGTHS = [7, 5]
PAD_FILL = 0
MAX_NEW_TOKENS = 8
# Mixes whole-word pieces of the generated language ("torou", "sanga", ...) with single characters; the em dash,
# "ï" and the emoji never occur in the training text, so they exercise byte fallback; the double space and the
# digits exercise remove_extra_whitespaces=False and split_digits=True.
TEXT = "The torou sanga 2024  pol — naïve 🙂 sol, vamsis!"

MODELS = {
    # name: (LlamaConfig keyword arguments, seed, spelling of the RoPE base in config.json)
    "gqa": (dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_hidden_layers=2,
                 intermediate_size=48, tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5),
            1031, "rope_parameters"),
    "tied": (dict(hidden_size=24, num_attention_heads=4, num_key_value_heads=4, head_dim=6, num_hidden_layers=2,
                  intermediate_size=40, tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-6),
             1002, "rope_theta"),
    "headdim": (dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, head_dim=12, num_hidden_layers=2,
                     intermediate_size=48, tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5),
                1003, "rope_parameters"),
}
# Derived from gqa's weights: (dtype, max_shard_size or None for one file).
CONVERTED = {"sharded-bf16": (torch.bfloat16, "30KB"), "f16": (torch.float16, None)}


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer

def training_text(seed=7, lines=1500):
    """Generates a pseudo-language corpus (syllable words, digits, punctuation, runs of spaces)."""
    rng = random.Random(seed)
    onsets = ["k", "l", "r", "m", "t", "s", "p", "v", "n", "d", "b", "g", "h", "", "st", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    codas = ["", "", "", "n", "s", "r", "l", "m"]
    words = []
    for _ in range(180):
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                       for _ in range(rng.choice([1, 2, 2, 3])))
        words.append(word)
    # Zipf-like frequencies so the unigram model learns whole frequent words and sub-word pieces of rare ones.
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    out = []
    for _ in range(lines):
        parts = []
        for _ in range(rng.randint(4, 14)):
            r = rng.random()
            if r < 0.08:
                parts.append(str(rng.randint(0, 99999)))
            else:
                parts.append(rng.choices(words, weights)[0])
        sentence = ""
        for i, part in enumerate(parts):
            if i > 0:
                sentence += "  " if rng.random() < 0.05 else " "
            sentence += part
            if rng.random() < 0.06:
                sentence += rng.choice([",", ";", ":"])
        sentence = sentence[0].upper() + sentence[1:] if rng.random() < 0.02 else sentence
        out.append(sentence + rng.choice([".", ".", ".", "?", "!"]))
    return out


def train_tokenizer():
    """Trains the fixture SentencePiece model (LLaMA's settings: unigram, byte fallback, identity normalization)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_text()), model_writer=model,
        model_type="unigram", vocab_size=VOCAB_SIZE, byte_fallback=True, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        add_dummy_prefix=True, unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=-1,
        num_threads=1, shuffle_input_sentence=False, minloglevel=2)
    return model.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Models

def randomize(model, seed):
    """Re-initializes every weight at unit-ish scale (HF's default std 0.02 gives nearly flat logits),
    norm weights included, so that every tensor visibly matters in the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(torch.empty(param.shape).uniform_(0.5, 1.5, generator=gen))
            elif name == "model.embed_tokens.weight":
                param.copy_(torch.randn(param.shape, generator=gen))
            else:
                # Linear (out, in): std 1/sqrt(in) keeps activations O(1) through the residual stream.
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[1] ** 0.5)


def batch_ids(seed, vocab_size):
    """Two right-padded sequences starting with BOS; body tokens drawn from the non-special pieces."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((len(LENGTHS), max(LENGTHS)), PAD_FILL, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, length in enumerate(LENGTHS):
        ids[b, 0] = BOS
        ids[b, 1:length] = torch.randint(3, vocab_size, (length - 1,), generator=gen)
        mask[b, :length] = 1
    return ids, mask


def rewrite_rope_spelling(directory, spelling, rope_theta):
    """transformers writes `rope_parameters`; older files have a top-level `rope_theta`. Cover both."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": rope_theta}, config["rope_parameters"]
    if spelling == "rope_theta":
        del config["rope_parameters"]
        config["rope_theta"] = rope_theta
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def expected_outputs(model, sp, ids, mask, with_gradients):
    """Everything a test compares, as F32 tensors (ids stored as F32 values)."""
    model.eval()
    out = {}
    with torch.no_grad():
        out["ids"] = ids.float()
        out["lengths"] = torch.tensor(LENGTHS, dtype=torch.float32)
        out["logits"] = model(input_ids=ids, attention_mask=mask).logits.float()
        first = ids[:1, :LENGTHS[0]]
        out["single_logits"] = model(input_ids=first).logits[0].float()
        text_ids = torch.tensor([[BOS] + sp.encode(TEXT)])
        out["text_ids"] = text_ids[0].float()
        out["text_logits"] = model(input_ids=text_ids).logits[0].float()
        generated = model.generate(input_ids=first, attention_mask=torch.ones_like(first), do_sample=False,
                                   max_new_tokens=MAX_NEW_TOKENS, repetition_penalty=1.0, eos_token_id=EOS,
                                   pad_token_id=EOS)
        out["greedy"] = generated[0].float()
        check_greedy_margins(model, generated[0])
    if with_gradients:
        # Next-token CE over positions 0..T-2 of sequence 1 (HF shifts the labels), and its gradient with
        # respect to the input embeddings (the output of the embedding lookup), shape (T, C).
        embeddings = model.model.embed_tokens(first).detach().requires_grad_(True)
        loss = model(inputs_embeds=embeddings, labels=first).loss
        loss.backward()
        out["loss"] = loss.detach().reshape(1).float()
        out["grad_input_embeddings"] = embeddings.grad[0].float()
    return {name: tensor.contiguous() for name, tensor in out.items()}


def check_greedy_margins(model, sequence):
    """Greedy tokens are a robust fixture only when top-1 beats top-2 clearly at every step."""
    with torch.no_grad():
        logits = model(input_ids=sequence[None]).logits[0]
    prompt = LENGTHS[0]
    for position in range(prompt - 1, len(sequence) - 1):
        top = torch.topk(logits[position], 2).values
        margin = (top[0] - top[1]).item()
        assert margin > 1e-2, f"greedy step at position {position} is a near tie (margin {margin}); change the seed"
        assert torch.argmax(logits[position]).item() == sequence[position + 1].item()


def save_expected(directory, tensors):
    """Writes directory/expected.safetensors (byte-stable F32, see fixture_support.save_tensors) with the fixture text
    and the library versions as metadata."""
    metadata = {"text": TEXT, "torch": torch.__version__, "transformers": transformers.__version__,
                "script": "scripts/make_model_fixtures.py"}
    save_tensors(directory / "expected.safetensors", tensors, metadata)


def build_all():
    sp_bytes = train_tokenizer()
    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    assert sp.get_piece_size() == VOCAB_SIZE and sp.bos_id() == BOS and sp.eos_id() == EOS and sp.unk_id() == UNK

    if ROOT.exists():
        shutil.rmtree(ROOT)
    ROOT.mkdir(parents=True)

    gqa_model = None
    for name, (kwargs, seed, spelling) in MODELS.items():
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=VOCAB_SIZE, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None,
                             max_position_embeddings=64, attn_implementation="eager", **kwargs)
        model = LlamaForCausalLM(config).float()
        randomize(model, seed)
        if config.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        directory = ROOT / name
        model.save_pretrained(directory, safe_serialization=True)
        rewrite_rope_spelling(directory, spelling, kwargs["rope_theta"])
        (directory / "tokenizer.model").write_bytes(sp_bytes)
        ids, mask = batch_ids(seed + 1, VOCAB_SIZE)
        save_expected(directory, expected_outputs(model, sp, ids, mask, with_gradients=(name == "gqa")))
        if name == "gqa":
            gqa_model, gqa_ids, gqa_mask = model, ids, mask

    for name, (dtype, shard_size) in CONVERTED.items():
        directory = ROOT / name
        low = LlamaForCausalLM(gqa_model.config)
        low.load_state_dict(gqa_model.state_dict())
        low = low.to(dtype)
        if shard_size:
            low.save_pretrained(directory, safe_serialization=True, max_shard_size=shard_size)
        else:
            low.save_pretrained(directory, safe_serialization=True)
        rewrite_rope_spelling(directory, "rope_parameters", MODELS["gqa"][0]["rope_theta"])
        (directory / "tokenizer.model").write_bytes(sp_bytes)
        # Expected outputs come from the stored low-precision weights upcast to F32, the way LoRAKit loads them.
        upcast = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
        for param_name, param in upcast.state_dict().items():
            assert param.dtype == torch.float32
            assert torch.equal(param, gqa_model.state_dict()[param_name].to(dtype).float()), param_name
        save_expected(directory, expected_outputs(upcast, sp, gqa_ids, gqa_mask, with_gradients=False))
        if shard_size:
            shards = sorted(directory.glob("model-*-of-*.safetensors"))
            assert (directory / "model.safetensors.index.json").exists() and len(shards) >= 2, shards


# ---------------------------------------------------------------------------------------------------------------
# Verification: reload every directory with transformers (default attention implementation, not the eager one
# used above) and compare with the stored expectations.

def check_all():
    worst = 0.0
    for directory in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        expected = load_file(str(directory / "expected.safetensors"))
        model = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        config = json.loads((directory / "config.json").read_text())
        sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
        ids = expected["ids"].long()
        lengths = expected["lengths"].long()
        mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
        diffs = {}
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
            # Only real (unpadded) query positions are compared.
            diffs["logits"] = max((logits[b, :n] - expected["logits"][b, :n]).abs().max().item()
                                  for b, n in enumerate(lengths.tolist()))
            single = model(input_ids=ids[:1, :lengths[0]]).logits[0]
            diffs["single_logits"] = (single - expected["single_logits"]).abs().max().item()
            text_ids = torch.tensor([[BOS] + sp.encode(TEXT)])
            assert torch.equal(text_ids[0].float(), expected["text_ids"]), f"{directory.name}: text_ids differ"
            diffs["text_logits"] = (model(input_ids=text_ids).logits[0] - expected["text_logits"]).abs().max().item()
            first = ids[:1, :lengths[0]]
            generated = model.generate(input_ids=first, attention_mask=torch.ones_like(first), do_sample=False,
                                       max_new_tokens=MAX_NEW_TOKENS, eos_token_id=EOS, pad_token_id=EOS)
            assert torch.equal(generated[0].float(), expected["greedy"]), f"{directory.name}: greedy differs"
        if "loss" in expected:
            embeddings = model.model.embed_tokens(first).detach().requires_grad_(True)
            loss = model(inputs_embeds=embeddings, labels=first).loss
            loss.backward()
            diffs["loss"] = abs(loss.item() - expected["loss"].item())
            diffs["grad_input_embeddings"] = (embeddings.grad[0] - expected["grad_input_embeddings"]).abs().max().item()
        rope = "rope_theta" if "rope_theta" in config else "rope_parameters"
        files = sorted(p.name for p in directory.iterdir())
        print(f"{directory.name:13s} rope={rope:15s} dtype={config.get('dtype')} files={files}")
        print("              max|diff| " + "  ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
        worst = max(worst, *diffs.values())
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"worst max|diff| {worst:.2e}; total size {total / 1024:.1f} KiB; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    assert worst < 1e-4, worst
    assert total < 2 * 1024 * 1024, total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify the fixtures already on disk")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.check:
        build_all()
    check_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
