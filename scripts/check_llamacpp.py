#!/usr/bin/env python3
"""Runs LoRAKit's exports in the tools people use, with those tools' own code, and prints the max differences.

Not part of scripts/test.sh: it needs PyPI packages (torch, transformers, peft, sentencepiece, llama-cpp-python).
llama-cpp-python builds llama.cpp from source:  CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python

For the base model and each adapter:
  1. `lora merge --format hf`, loaded by transformers, vs PEFT's merge_and_unload() on the same base and adapter
     (F32): must be < 1e-4;
  2. `lora merge --format gguf`, run by llama.cpp, vs the same PEFT logits: must be < 2e-2;
  3. `lora merge --format gguf` without adapter (the base), with `lora export-adapter`'s GGUF adapter applied by
     llama.cpp (scale 1), vs PEFT's un-merged model: must be < 2e-2;
  4. llama.cpp's tokenization with the GGUF vocabulary vs `lora tokenizer encode`: must be identical for a
     SentencePiece BPE model (Tests/Fixtures/tokenizer/bpe.model; LLaMA's tokenizers are BPE). llama.cpp's "llama"
     tokenizer merges pieces by score as SentencePiece BPE does, so a unigram model (the gqa fixture) may be
     segmented differently: that is printed as a note.

Usage:
  /tmp/refenv/bin/python scripts/check_llamacpp.py [--lora .build/release/lora] [--base DIR] [ADAPTER_DIR ...]
Defaults: base Tests/Fixtures/models/gqa, adapters Tests/Fixtures/peft/{lora-qv,lora-all-rslora,lora-pattern}.
Exit status 1 when a check fails, 2 on bad input.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["The torou sanga 2024  pol — naïve 🙂 sol, vamsis!", "hello world", "  two  spaces\tand tab",
         "12345 ünïcödé", "a", ""]


def lora(binary, *args):
    result = subprocess.run([binary, *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"lora {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def llama_logits(model_path, ids, lora_path=None):
    from llama_cpp import Llama
    llm = Llama(model_path=model_path, lora_path=lora_path, n_ctx=max(64, len(ids)), n_batch=64, n_threads=1,
                logits_all=True, verbose=False)
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llama_tokenize(model_path, text):
    from llama_cpp import Llama
    llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lora", default=os.path.join(ROOT, ".build/debug/lora"), help="the lora executable")
    parser.add_argument("--base", default=os.path.join(ROOT, "Tests/Fixtures/models/gqa"))
    parser.add_argument("adapters", nargs="*", default=[os.path.join(ROOT, "Tests/Fixtures/peft", a)
                                                        for a in ("lora-qv", "lora-all-rslora", "lora-pattern")])
    args = parser.parse_args()
    if not os.access(args.lora, os.X_OK):
        print(f"{args.lora}: not an executable (build with swift build, or pass --lora)", file=sys.stderr)
        sys.exit(2)
    from transformers import AutoModelForCausalLM, AutoConfig
    from peft import PeftModel
    import llama_cpp
    torch.set_num_threads(1)
    print(f"llama-cpp-python {llama_cpp.__version__}")

    config = AutoConfig.from_pretrained(args.base)
    vocab = config.vocab_size
    ids = [config.bos_token_id] + [(i * 7919 + 3) % vocab for i in range(1, 12)]
    failures = []

    def report(label, value, limit):
        ok = value < limit
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {value:.3g} (limit {limit:g})")
        if not ok:
            failures.append(label)

    def base_model():
        return AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32).eval()

    with tempfile.TemporaryDirectory() as tmp:
        base_gguf = os.path.join(tmp, "base.gguf")
        lora(args.lora, "merge", "--base", args.base, "--out", base_gguf, "--format", "gguf")
        base_logits = torch_logits(base_model(), ids)

        # Tokenization: llama.cpp's "llama" tokenizer is SentencePiece BPE (what LLaMA models ship). It must give
        # `lora tokenizer encode`'s ids for a BPE model; for a unigram model (the gqa fixture) it may segment
        # differently, which is reported, not failed.
        from transformers import LlamaConfig, LlamaForCausalLM
        bpe_model = os.path.join(ROOT, "Tests/Fixtures/tokenizer/bpe.model")
        bpe_config = LlamaConfig.from_pretrained(args.base)
        bpe_config.vocab_size = 400
        bpe_dir = os.path.join(tmp, "bpe-base")
        LlamaForCausalLM(bpe_config).save_pretrained(bpe_dir, safe_serialization=True)
        shutil.copy(bpe_model, os.path.join(bpe_dir, "tokenizer.model"))
        bpe_gguf = os.path.join(tmp, "bpe.gguf")
        lora(args.lora, "merge", "--base", bpe_dir, "--out", bpe_gguf, "--format", "gguf")
        for gguf_path, model_path, required in [(bpe_gguf, bpe_model, True),
                                                (base_gguf, os.path.join(args.base, "tokenizer.model"), False)]:
            kind = "bpe" if required else "base"
            for text in TEXTS:
                ours = [int(x) for x in lora(args.lora, "tokenizer", "encode", "--model", model_path,
                                             "--text", text).strip().split(",") if x]
                theirs = llama_tokenize(gguf_path, text)
                ok = ours == theirs
                status = "ok  " if ok else ("FAIL" if required else "note")
                print(f"{status} tokenize ({kind}) {text!r}: {'same ids' if ok else f'lora {ours} vs llama.cpp {theirs}'}")
                if not ok and required:
                    failures.append(f"tokenize {text!r}")
        report("llama.cpp on the base's GGUF vs transformers", float(np.abs(llama_logits(base_gguf, ids) - base_logits).max()), 2e-2)

        for adapter in args.adapters:
            name = os.path.basename(adapter.rstrip("/"))
            peft_model = PeftModel.from_pretrained(base_model(), adapter).eval()
            adapted = torch_logits(peft_model, ids)
            merged = torch_logits(peft_model.merge_and_unload(), ids)
            moved = float(np.abs(adapted - base_logits).max())
            print(f"---- {name}: the adapter moves logits by {moved:.3g}")

            hf_dir = os.path.join(tmp, name + "-hf")
            lora(args.lora, "merge", "--base", args.base, "--adapter", adapter, "--out", hf_dir, "--format", "hf")
            ours = torch_logits(AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval(), ids)
            report(f"{name}: transformers on `merge --format hf` vs PEFT merge_and_unload", float(np.abs(ours - merged).max()), 1e-4)

            gguf_path = os.path.join(tmp, name + ".gguf")
            lora(args.lora, "merge", "--base", args.base, "--adapter", adapter, "--out", gguf_path, "--format", "gguf")
            report(f"{name}: llama.cpp on `merge --format gguf` vs PEFT merged",
                   float(np.abs(llama_logits(gguf_path, ids) - merged).max()), 2e-2)

            adapter_gguf = os.path.join(tmp, name + "-adapter.gguf")
            lora(args.lora, "export-adapter", "--adapter", adapter, "--base", args.base, "--out", adapter_gguf)
            report(f"{name}: llama.cpp base GGUF + `export-adapter` GGUF vs PEFT",
                   float(np.abs(llama_logits(base_gguf, ids, lora_path=adapter_gguf) - adapted).max()), 2e-2)

    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
