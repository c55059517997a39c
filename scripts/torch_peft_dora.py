#!/usr/bin/env python3
"""Runs the reference benchmark (../shared/bench/torch_peft_bench.py) with PEFT's DoRA instead of plain LoRA.

Usage: torch_peft_dora.py PATH/TO/torch_peft_bench.py <its flags>
PEFT's LoraConfig gets use_dora=True as its default before the reference script imports it; everything else (model,
data, optimizer, timing, the JSON line) is the reference script's own.
"""
import functools
import runpy
import sys

import peft

peft.LoraConfig = functools.partial(peft.LoraConfig, use_dora=True)
reference = sys.argv[1]
sys.argv = [reference] + sys.argv[2:]
runpy.run_path(reference, run_name="__main__")
