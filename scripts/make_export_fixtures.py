#!/usr/bin/env python3
"""Writes Tests/Fixtures/export/: what transformers, PEFT and llama.cpp make of the fixture adapters, so the Swift
tests of `lora merge`, `lora export-adapter` and `lora combine` compare against those tools without Python.

Base model: Tests/Fixtures/models/gqa. Adapters: Tests/Fixtures/peft/{lora-qv,lora-all-rslora,lora-pattern} and
`adapter-b/`, made here (r 4, alpha 16, v_proj/o_proj/up_proj, random A and B).

Files (see Tests/Fixtures/README.md, section "export/"):
  adapter-b/                   PEFT adapter written by save_pretrained
  merge.safetensors            ids [8]; logits of PEFT merge_and_unload(): `logits_qv` (lora-qv),
                               `logits_rslora_pattern` (lora-all-rslora and lora-pattern merged together)
  combine-{cat,linear,svd}/    PEFT add_weighted_adapter(["lora-qv", "adapter-b"], [0.7, -0.4], type)
  llamacpp/merged-qv.gguf      llama.cpp's convert_hf_to_gguf.py (--outtype f32) on PEFT's merged lora-qv model
  llamacpp/lora-qv.gguf        llama.cpp's convert_lora_to_gguf.py (--outtype f32) on lora-qv (base gqa)
  llamacpp/adapter-b.gguf      the same on adapter-b
  llamacpp/expected.safetensors  only when llama-cpp-python is installed: what llama.cpp computes —
                               `text_ids_K` (llama.cpp's tokenization of texts K, no BOS, metadata `text_K`,
                               with gqa's unigram vocabulary), `bpe_text_ids_K` (the same with the vocabulary of
                               Tests/Fixtures/tokenizer/bpe.model),
                               `logits_merged` (merged-qv.gguf on `ids`), `logits_lora` (the base converted by
                               convert_hf_to_gguf.py, with lora-qv.gguf applied at scale 1, on `ids`)

Usage (from anywhere; llama.cpp's converters come from a llama.cpp source tree, e.g. the `vendor/llama.cpp` of the
llama-cpp-python sdist):
  /tmp/refenv/bin/python scripts/make_export_fixtures.py --llama-cpp DIR           # rebuild, then verify
  /tmp/refenv/bin/python scripts/make_export_fixtures.py --llama-cpp DIR --check   # only verify the committed files
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "Tests/Fixtures/models/gqa"
PEFT_DIR = "Tests/Fixtures/peft"
OUT = "Tests/Fixtures/export"
WEIGHTS = [0.7, -0.4]
TEXTS = ["The torou sanga 2024  pol — naïve 🙂 sol, vamsis!", "hello world", "  two  spaces\tand tab", "12345 ünïcödé"]


def load_base():
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager").eval()


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def fixture_ids():
    return [int(x) for x in load_file(os.path.join(PEFT_DIR, "lora-qv", "expected.safetensors"))["ids"]]


def make_adapter_b(out):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(20240604)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["v_proj", "o_proj", "up_proj"], lora_dropout=0.0,
                        task_type="CAUSAL_LM")
    model = get_peft_model(load_base(), config)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_A" in name:
                bound = 1 / p.shape[1] ** 0.5
                p.uniform_(-bound, bound)
            elif "lora_B" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(out)
    clean_adapter_dir(out)


def clean_adapter_dir(path):
    readme = os.path.join(path, "README.md")
    if os.path.exists(readme):
        os.remove(readme)


def make_merge(out):
    from peft import PeftModel
    ids = fixture_ids()
    merged_qv = PeftModel.from_pretrained(load_base(), os.path.join(PEFT_DIR, "lora-qv")).merge_and_unload()
    model = PeftModel.from_pretrained(load_base(), os.path.join(PEFT_DIR, "lora-all-rslora"), adapter_name="a")
    model.load_adapter(os.path.join(PEFT_DIR, "lora-pattern"), adapter_name="b")
    merged_pair = model.merge_and_unload(adapter_names=["a", "b"])
    save_file({"ids": np.array(ids, dtype=np.float32),
               "logits_qv": logits(merged_qv, ids),
               "logits_rslora_pattern": logits(merged_pair, ids)},
              os.path.join(out, "merge.safetensors"), metadata={"format": "pt"})
    return merged_qv


def make_combine(out):
    from peft import PeftModel
    model = PeftModel.from_pretrained(load_base(), os.path.join(PEFT_DIR, "lora-qv"), adapter_name="qv")
    model.load_adapter(os.path.join(out, "adapter-b"), adapter_name="b")
    for method in ["cat", "linear", "svd"]:
        name = "combine-" + method
        model.add_weighted_adapter(["qv", "b"], WEIGHTS, name, combination_type=method)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, selected_adapters=[name])
            shutil.copytree(os.path.join(tmp, name), os.path.join(out, name))
        clean_adapter_dir(os.path.join(out, name))


def run_converter(llama_cpp, script, args):
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the tree's own gguf-py
    subprocess.run([sys.executable, os.path.join(llama_cpp, script)] + args, check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_llamacpp(out, llama_cpp, merged_qv):
    dest = os.path.join(out, "llamacpp")
    os.makedirs(dest)
    with tempfile.TemporaryDirectory() as tmp:
        merged_dir = os.path.join(tmp, "merged-qv")
        merged_qv.save_pretrained(merged_dir, safe_serialization=True)
        shutil.copy(os.path.join(BASE, "tokenizer.model"), merged_dir)
        run_converter(llama_cpp, "convert_hf_to_gguf.py",
                      [merged_dir, "--outtype", "f32", "--outfile", os.path.join(dest, "merged-qv.gguf")])
        for adapter, path in [("lora-qv", os.path.join(PEFT_DIR, "lora-qv")), ("adapter-b", os.path.join(out, "adapter-b"))]:
            run_converter(llama_cpp, "convert_lora_to_gguf.py",
                          [path, "--base", BASE, "--outtype", "f32", "--outfile", os.path.join(dest, adapter + ".gguf")])
        try:
            import llama_cpp as _  # noqa: F401
        except ImportError:
            print("llama-cpp-python is not installed: llamacpp/expected.safetensors not written")
            return
        base_gguf = os.path.join(tmp, "base.gguf")
        run_converter(llama_cpp, "convert_hf_to_gguf.py", [BASE, "--outtype", "f32", "--outfile", base_gguf])
        tensors, metadata = {}, {"format": "pt"}
        ids = fixture_ids()
        merged = llama_logits(os.path.join(dest, "merged-qv.gguf"), ids)
        tensors["ids"] = np.array(ids, dtype=np.float32)
        tensors["logits_merged"] = merged
        tensors["logits_lora"] = llama_logits(base_gguf, ids, lora=os.path.join(dest, "lora-qv.gguf"))
        bpe_gguf = convert_bpe_vocabulary(llama_cpp, tmp)
        for k, text in enumerate(TEXTS):
            tensors[f"text_ids_{k}"] = np.array(llama_tokenize(os.path.join(dest, "merged-qv.gguf"), text), dtype=np.float32)
            tensors[f"bpe_text_ids_{k}"] = np.array(llama_tokenize(bpe_gguf, text), dtype=np.float32)
            metadata[f"text_{k}"] = text
        import llama_cpp
        metadata["llama_cpp_python"] = llama_cpp.__version__
        save_file(tensors, os.path.join(dest, "expected.safetensors"), metadata=metadata)


def convert_bpe_vocabulary(llama_cpp, tmp):
    """A GGUF with the vocabulary of Tests/Fixtures/tokenizer/bpe.model (400 pieces): gqa's config with vocab 400,
    random weights (only the vocabulary is used), converted by convert_hf_to_gguf.py."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig.from_pretrained(BASE)
    config.vocab_size = 400
    torch.manual_seed(0)
    directory = os.path.join(tmp, "bpe-base")
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    shutil.copy("Tests/Fixtures/tokenizer/bpe.model", os.path.join(directory, "tokenizer.model"))
    out = os.path.join(tmp, "bpe.gguf")
    run_converter(llama_cpp, "convert_hf_to_gguf.py", [directory, "--outtype", "f32", "--outfile", out])
    return out


def llama_model(path, lora=None):
    from llama_cpp import Llama
    return Llama(model_path=path, lora_path=lora, n_ctx=64, n_batch=64, n_threads=1, logits_all=True,
                 verbose=False, seed=0)


def llama_logits(path, ids, lora=None):
    llm = llama_model(path, lora)
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llama_tokenize(path, text):
    from llama_cpp import Llama
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def build(out, llama_cpp):
    os.makedirs(out)
    make_adapter_b(os.path.join(out, "adapter-b"))
    merged_qv = make_merge(out)
    make_combine(out)
    make_llamacpp(out, llama_cpp, merged_qv)


def compare(committed, rebuilt):
    """Max |diff| per numeric file; JSON files must be equal. Returns a list of failures."""
    import gguf
    failures = []
    for dirpath, _, files in os.walk(rebuilt):
        for f in sorted(files):
            new = os.path.join(dirpath, f)
            rel = os.path.relpath(new, rebuilt)
            old = os.path.join(committed, rel)
            if not os.path.exists(old):
                failures.append(f"{rel}: missing from the committed fixtures")
                continue
            if f.endswith(".safetensors"):
                a, b = load_file(old), load_file(new)
                worst = max((float(np.abs(a[k] - b[k]).max()) if a[k].shape == b[k].shape else float("inf"))
                            for k in b) if set(a) == set(b) else float("inf")
            elif f.endswith(".gguf"):
                ra, rb = gguf.GGUFReader(old), gguf.GGUFReader(new)
                ta = {t.name: np.asarray(t.data, dtype=np.float32) for t in ra.tensors}
                tb = {t.name: np.asarray(t.data, dtype=np.float32) for t in rb.tensors}
                worst = max(float(np.abs(ta[k] - tb[k]).max()) for k in tb) if set(ta) == set(tb) else float("inf")
            elif f.endswith(".json"):
                worst = 0.0 if json.load(open(old)) == json.load(open(new)) else float("inf")
            else:
                worst = 0.0 if open(old, "rb").read() == open(new, "rb").read() else float("inf")
            print(f"{rel}: max |diff| {worst:.3g}")
            if worst > 1e-5:
                failures.append(f"{rel}: differs by {worst}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-cpp", required=True, help="llama.cpp source tree (with convert_hf_to_gguf.py)")
    parser.add_argument("--check", action="store_true", help="only verify the committed fixtures")
    args = parser.parse_args()
    llama_cpp = os.path.abspath(args.llama_cpp)
    sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
    os.chdir(ROOT)
    torch.set_num_threads(1)
    if not args.check:
        shutil.rmtree(OUT, ignore_errors=True)
        build(OUT, llama_cpp)
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = os.path.join(tmp, "export")
        build(rebuilt, llama_cpp)
        failures = compare(OUT, rebuilt)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures: {size / 1024:.0f} KiB")
    if size > 1_000_000:
        failures.append(f"fixtures take {size} bytes, more than 1 MB")
    if failures:
        print("\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
