#!/usr/bin/env bash
# LoRAKit quickstart: installs what the build needs, builds in release, and shows the model commands on a
# committed tiny Llama checkpoint (random weights made by transformers; see Tests/Fixtures/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "==> swift build -c release"
swift build -c release 2>&1 | grep -E "error|warning:|Compiling lora|Build complete" || true
LORA=$(swift build -c release --show-bin-path)/lora
BASE=Tests/Fixtures/models/gqa
OUT=runs/quickstart
mkdir -p "$OUT"

echo
echo "==> lora tokenizer encode (the base's SentencePiece model)"
"$LORA" tokenizer encode --model "$BASE/tokenizer.model" --text "The torou sanga 2024"

echo
echo "==> lora forward: logits of one sequence, written as safetensors"
"$LORA" forward --base "$BASE" --text "The torou sanga" --out "$OUT/logits.safetensors"

echo
echo "==> lora generate (greedy, KV cache; the fixture model is random, so the text is too)"
"$LORA" generate --base "$BASE" --prompt "The torou" --max-new-tokens 16

echo
echo "==> lora generate (sampled: temperature 0.8, top-p 0.9, seed 7)"
"$LORA" generate --base "$BASE" --prompt "The torou" --max-new-tokens 16 --temperature 0.8 --top-p 0.9 --seed 7
echo
echo "done: outputs in $OUT"
