#!/usr/bin/env python3
"""Runs the reference benchmark (../shared/bench/torch_peft_bench.py) with transformers' gradient checkpointing.

Usage: torch_peft_checkpointing.py PATH/TO/torch_peft_bench.py <its flags>
Before the reference script runs, LlamaForCausalLM's constructor is wrapped so that every model it builds turns on
gradient checkpointing (non-reentrant, transformers' recommended form) and makes the embedding's output require
gradients, as `Trainer(gradient_checkpointing=True)` does for a PEFT model; everything else (model, data, optimizer,
timing, the JSON line) is the reference script's own. (The class itself is patched: `from transformers import
LlamaForCausalLM` goes through transformers' lazy module, which would not see a replaced attribute.)
"""
import runpy
import sys

import transformers


build = transformers.LlamaForCausalLM.__init__


def build_checkpointed(self, config, *args, **kwargs):
    build(self, config, *args, **kwargs)
    self.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    self.enable_input_require_grads()


transformers.LlamaForCausalLM.__init__ = build_checkpointed
reference = sys.argv[1]
sys.argv = [reference] + sys.argv[2:]
runpy.run_path(reference, run_name="__main__")
