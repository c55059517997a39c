#!/usr/bin/env bash
# LoRAKit quickstart, on a fresh Debian machine as root: installs the Debian packages, builds in release, then
#   1. fine-tunes the shipped base (checkpoints/base, a 0.9M-parameter Llama pretrained by `lora pretrain` on
#      datasets/corpus.txt) with LoRA on q and v, on datasets/instructions/train.json — the family `smallest` is
#      new to the base, the others are replayed so forgetting shows;
#   2. evaluates base and base+adapter on the held-out split, per task family (exact match, loss), and writes
#      runs/quickstart/eval.json as {"base": {...}, "adapter": {...}};
#   3. shows a few generations, merges the adapter into the base and exports it for transformers and llama.cpp.
# Everything goes to runs/quickstart (replaced on each run). LORAKIT_THREADS=N sets the thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "==> swift build -c release"
swift build -c release --product lora 2>&1 | grep -E "error|warning: |Build of product|Compiling lora" || true
LORA=$(swift build -c release --show-bin-path)/lora
[ -x "$LORA" ] || { echo "the release build failed (run: swift build -c release)" >&2; exit 1; }

BASE=checkpoints/base
DATA=datasets/instructions
OUT=runs/quickstart
THREADS=(--threads "${LORAKIT_THREADS:-$(nproc)}")
rm -rf "$OUT"
mkdir -p "$OUT"

echo
echo "==> lora finetune: LoRA r=8 on q and v of every block, 4 epochs of $DATA/train.json"
"$LORA" finetune --base "$BASE" --data "$DATA/train.json" --val-data "$DATA/val.json" \
    --template datasets/template.json --out "$OUT/adapter" \
    --targets q,v --rank 8 --alpha 16 --dropout 0.05 \
    --epochs 4 --batch-size 16 --lr 2e-3 --lr-schedule cosine --warmup-steps 20 \
    --eval-every 100 --save-every 100 --seed 0 "${THREADS[@]}"

echo
echo "==> lora eval: the base alone on the held-out split ($DATA/test.json)"
"$LORA" eval --base "$BASE" --data "$DATA/test.json" --template datasets/template.json \
    --group-by family --show-examples 3 "${THREADS[@]}" > "$OUT/eval-base.json"

echo
echo "==> lora eval: base + adapter on the same split, side by side with the base"
"$LORA" eval --base "$BASE" --adapter "$OUT/adapter" --data "$DATA/test.json" --template datasets/template.json \
    --group-by family --show-examples 3 --baseline "$OUT/eval-base.json" "${THREADS[@]}" > "$OUT/eval-adapter.json"
{ printf '{"base": '; cat "$OUT/eval-base.json"; printf ', "adapter": '; cat "$OUT/eval-adapter.json"; printf '}\n'; } \
    > "$OUT/eval.json"
echo "wrote $OUT/eval.json"

echo
echo "==> lora generate: the new task, base alone and with the adapter (greedy)"
for input in "7 3 9 5" "8 6 2 4 9" "5 1 7"; do
    for adapter in "" "$OUT/adapter"; do
        label=base; args=()
        if [ -n "$adapter" ]; then label=adapter; args=(--adapter "$adapter"); fi
        answer=$("$LORA" generate --base "$BASE" "${args[@]}" --template datasets/template.json \
            --instruction "Which number is the smallest?" --input "$input" --max-new-tokens 4 "${THREADS[@]}" 2>/dev/null)
        printf '  %-8s smallest of %-10s -> %s\n' "$label" "$input" "$answer"
    done
done

echo
echo "==> lora merge: base + adapter as a Hugging Face directory and as a llama.cpp GGUF file"
"$LORA" merge --base "$BASE" --adapter "$OUT/adapter" --format hf --out "$OUT/merged-hf" "${THREADS[@]}"
"$LORA" merge --base "$BASE" --adapter "$OUT/adapter" --format gguf --out "$OUT/merged.gguf" "${THREADS[@]}"
"$LORA" export-adapter --base "$BASE" --adapter "$OUT/adapter" --out "$OUT/adapter.gguf"

echo
echo "done: adapter, evaluations, merged models in $OUT"
