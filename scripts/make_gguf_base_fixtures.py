#!/usr/bin/env python3
"""A llama.cpp model file as a base model: a small LLaMA written to GGUF as llama.cpp's converter lays it out,
quantized to Q4_K_M by llama.cpp itself, and what transformers and llama.cpp make of that file.

The model: random weights (norms too, so that no tensor can stand in for another), dim 256 and FFN 256 so that
every row is whole 256-value K-quant blocks, 2 blocks, 4 query heads and 2 key/value heads (GQA), an untied LM head,
and the SentencePiece BPE vocabulary of Tests/Fixtures/tokenizer/bpe.model (400 pieces) with a Zephyr chat template.

Writes Tests/Fixtures/gguf-base/:
  model-q4_k_m.gguf    llama.cpp's `llama_model_quantize` (LLAMA_FTYPE_MOSTLY_Q4_K_M) of the F32 file, which this
                       script writes with gguf-py as convert_hf_to_gguf.py does (q/k rows permuted for llama.cpp's
                       RoPE) and does not keep
  expected.safetensors ids [12] and logits [12, 400]: transformers' LlamaForCausalLM loaded from the Q4_K_M file
                       (`from_pretrained(gguf_file=…)`, which dequantizes with gguf-py and un-permutes q/k), in F32
  tokens.json          llama.cpp's tokenization of a few texts with the file's vocabulary (`Llama.tokenize`, no
                       BOS), the ids LoRAKit's tokenizer built from the same metadata must give

and the seeds of the GGUF fuzzer, Tests/Fuzz/corpus/gguf/ (each under 8 KB, the fuzzer's input limit): a tiny F32
model with a byte-fallback vocabulary, a tied F16 one without scores or types, one claiming 10^9 blocks, one whose </s> is an emoji, a file of one
tensor of every quantized type LoRAKit reads (random blocks), and a truncated model.

Usage:
    /tmp/refenv/bin/python scripts/make_gguf_base_fixtures.py            # regenerate, then verify
    /tmp/refenv/bin/python scripts/make_gguf_base_fixtures.py --check    # only verify the committed files
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from fixture_support import REPO, finish_gguf, fixture_size, run, save_tensors

OUT = REPO / "Tests" / "Fixtures" / "gguf-base"
SEEDS = REPO / "Tests" / "Fuzz" / "corpus" / "gguf"
TOKENIZER = REPO / "Tests" / "Fixtures" / "tokenizer" / "bpe.model"
DIM, FFN, LAYERS, HEADS, KV_HEADS, CONTEXT = 256, 256, 2, 4, 2, 64
IDS = [1, 17, 250, 3, 399, 42, 42, 128, 7, 300, 64, 2]
TEXTS = ["The torou sanga 2024  pol — naïve 🙂 sol, vamsis!", "hello world", "  two  spaces\tand tab",
         "12345 ünïcödé", "a"]
ZEPHYR = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] "
          "+ eos_token }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + "
          "eos_token }}{% endif %}{% endfor %}")


def vocabulary():
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    tokens = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    scores = [sp.get_score(i) for i in range(sp.vocab_size())]
    # llama.cpp's token types, as its converter derives them from SentencePiece
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i)
             else 1 for i in range(sp.vocab_size())]
    return tokens, scores, types


def weights(vocab):
    rng = np.random.default_rng(11)
    hd = DIM // HEADS

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    def norm():
        return (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)

    w = {"model.embed_tokens.weight": matrix(vocab, DIM)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = matrix(HEADS * hd, DIM)
        w[p + "self_attn.k_proj.weight"] = matrix(KV_HEADS * hd, DIM)
        w[p + "self_attn.v_proj.weight"] = matrix(KV_HEADS * hd, DIM)
        w[p + "self_attn.o_proj.weight"] = matrix(DIM, HEADS * hd)
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = matrix(FFN, DIM)
        w[p + "mlp.up_proj.weight"] = matrix(FFN, DIM)
        w[p + "mlp.down_proj.weight"] = matrix(DIM, FFN)
    w["model.norm.weight"] = norm()
    w["lm_head.weight"] = matrix(vocab, DIM)
    return w


def permute(w, heads):
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rows from rotate-half to interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_f32(path):
    import gguf
    tokens, scores, types = vocabulary()
    w = weights(len(tokens))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("gguf-base fixture")
    writer.add_block_count(LAYERS)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(DIM)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(DIM // HEADS)
    writer.add_file_type(0)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(ZEPHYR)
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    writer.add_tensor("token_embd.weight", w["model.embed_tokens.weight"])
    for l in range(LAYERS):
        for hf, cpp in names.items():
            t = w[f"model.layers.{l}.{hf}.weight"]
            if cpp == "attn_q":
                t = permute(t, HEADS)
            elif cpp == "attn_k":
                t = permute(t, KV_HEADS)
            writer.add_tensor(f"blk.{l}.{cpp}.weight", np.ascontiguousarray(t))
    writer.add_tensor("output_norm.weight", w["model.norm.weight"])
    writer.add_tensor("output.weight", w["lm_head.weight"])
    finish_gguf(writer)


def quantize(source, target):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    assert status == 0, f"llama_model_quantize failed ({status})"


def transformers_logits(path):
    import torch
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].float().numpy()


def llama_tokens(path):
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return {text: list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) for text in TEXTS}


def write():
    with tempfile.TemporaryDirectory() as scratch:
        f32 = Path(scratch) / "model-f32.gguf"
        write_f32(f32)
        quantize(f32, OUT / "model-q4_k_m.gguf")
    path = OUT / "model-q4_k_m.gguf"
    save_tensors(OUT / "expected.safetensors", {"ids": np.array(IDS, dtype=np.float32),
                                                "logits": transformers_logits(path)})
    (OUT / "tokens.json").write_text(json.dumps(llama_tokens(path), ensure_ascii=False, indent=1) + "\n")
    write_seeds()


def write_tiny(path, dtype="F32", tied=False, vocab_metadata=True, rng_seed=0, block_count=1, eos_text="</s>"):
    """A LLaMA of dim 8 (2 heads, 1 key/value head, FFN 8, 1 block) and 8 tokens, for the fuzzer's seeds;
    `block_count` is what the metadata claims."""
    import gguf
    rng = np.random.default_rng(rng_seed)
    tokens = ["<unk>", "<s>", eos_text, "\u2581", "a", "\u2581a", "<0x41>", "<|user|>"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(block_count)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(8)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    if vocab_metadata:
        writer.add_token_scores([0.0, 0.0, 0.0, -1.0, -2.0, -3.0, 0.0, 0.0])
        writer.add_token_types([2, 3, 3, 1, 1, 1, 6, 4])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    kind = {"F32": np.float32, "F16": np.float16}[dtype]

    def t(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(kind)
    writer.add_tensor("token_embd.weight", t(8, 8))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(8, dtype=np.float32))
    for name, shape in [("attn_q", (8, 8)), ("attn_k", (4, 8)), ("attn_v", (4, 8)), ("attn_output", (8, 8)),
                        ("ffn_gate", (8, 8)), ("ffn_up", (8, 8)), ("ffn_down", (8, 8))]:
        writer.add_tensor(f"blk.0.{name}.weight", t(*shape))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(8, dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    if not tied:
        writer.add_tensor("output.weight", t(8, 8))
    finish_gguf(writer)


def write_seeds():
    import gguf
    from fixture_support import fresh_directory
    fresh_directory(SEEDS)
    write_tiny(SEEDS / "tiny-f32.gguf")
    write_tiny(SEEDS / "tiny-tied-f16.gguf", dtype="F16", tied=True, vocab_metadata=False, rng_seed=1)
    # FuzzGGUF once timed out on a file claiming 10^9 blocks (names were built for all before any was read)
    write_tiny(SEEDS / "huge-block-count.gguf", block_count=10 ** 9)
    # and made `encode` trap on a one-character control piece that the text holds
    write_tiny(SEEDS / "control-emoji.gguf", eos_text="\U0001F642")
    data = (SEEDS / "tiny-f32.gguf").read_bytes()
    (SEEDS / "truncated.gguf").write_bytes(data[: len(data) * 2 // 3])
    rng = np.random.default_rng(5)
    writer = gguf.GGUFWriter(str(SEEDS / "quant-blocks.gguf"), "llama")
    Q = gguf.GGMLQuantizationType
    for qtype in [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]:
        values, size = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size, dtype=np.uint8)
        raw[:2] = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)   # a finite F16 scale first
        writer.add_tensor(qtype.name, raw.reshape(1, size), raw_dtype=qtype)
    finish_gguf(writer)
    for seed in SEEDS.iterdir():
        assert seed.stat().st_size < 8192, seed


def check():
    import gguf
    from safetensors.numpy import load_file
    path = OUT / "model-q4_k_m.gguf"
    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    # Q4_K_M: most matrices Q4_K, some (attn_v, ffn_down of some blocks, output) Q6_K, norms F32
    assert "Q4_K" in types.values() and "Q6_K" in types.values(), types
    assert types["blk.0.attn_norm.weight"] == "F32", types
    expected = load_file(str(OUT / "expected.safetensors"))
    assert list(expected["ids"].astype(int)) == IDS
    logits = transformers_logits(path)
    assert np.array_equal(logits, expected["logits"]), "transformers' logits changed"
    assert json.loads((OUT / "tokens.json").read_text()) == llama_tokens(path), "llama.cpp's tokens changed"
    print(f"{OUT}: {fixture_size(OUT)} bytes; tensor types: {sorted(set(types.values()))}")


if __name__ == "__main__":
    run(__doc__, OUT, write, check)
