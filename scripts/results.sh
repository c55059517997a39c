#!/usr/bin/env bash
# Reruns every experiment of docs/results.md on the shipped base (checkpoints/base) and data (datasets/), into
# runs/results (replaced): the target-module ablation at a matched budget (the LoRA paper's Table 5), the rank
# sweep (Table 6), the §7 analyses, and the variants (QLoRA's NF4 base, DoRA, AdaLoRA) against plain LoRA.
# About an hour on 2 cores; `scripts/results.sh ablation` or `scripts/results.sh variants` reruns one part.
# LORAKIT_THREADS=N sets the thread count. Needs a release build (scripts/quickstart.sh makes one).
set -euo pipefail
cd "$(dirname "$0")/.."
LORA=${LORA:-$(swift build -c release --show-bin-path)/lora}
[ -x "$LORA" ] || { echo "no release build at $LORA (run scripts/quickstart.sh or swift build -c release)" >&2; exit 1; }
BASE=checkpoints/base
DATA=datasets/instructions
OUT=runs/results
THREADS=(--threads "${LORAKIT_THREADS:-$(nproc)}")
[ "${1:-all}" = all ] && rm -rf "$OUT"
mkdir -p "$OUT"
# The quickstart's training options; 2 epochs per ablation run to keep 28 runs within half an hour.
TRAIN=(--data "$DATA/train.json" --val-data "$DATA/val.json" --template datasets/template.json
       --batch-size 16 --lr 2e-3 --lr-schedule cosine --warmup-steps 20 --dropout 0.05 --alpha 16)

section=${1:-all}     # all, ablation or variants
if [ "$section" = all ] || [ "$section" = ablation ]; then
rm -rf "$OUT/ablation" "$OUT/ranks" "$OUT"/analysis-*
echo "==> ablation: nine target sets at the budget of q,v rank 8, two seeds"
"$LORA" ablate --base "$BASE" "${TRAIN[@]}" --epochs 2 --seeds 2 --eval-limit 200 --out "$OUT/ablation" "${THREADS[@]}"

echo "==> rank sweep: q,v and q at ranks 1, 2, 4, 8, 64, two seeds"
"$LORA" ablate --base "$BASE" "${TRAIN[@]}" --epochs 2 --seeds 2 --eval-limit 200 --targets q,v --targets q \
    --ranks 1,2,4,8,64 --out "$OUT/ranks" "${THREADS[@]}"

echo "==> analysis: rank 8 against rank 64 (q,v), and two seeds at rank 8"
"$LORA" analyze --base "$BASE" --adapter "$OUT/ranks/runs/q+v-r8-s0" --compare "$OUT/ranks/runs/q+v-r64-s0" \
    --out "$OUT/analysis-r8-r64" "${THREADS[@]}"
"$LORA" analyze --base "$BASE" --adapter "$OUT/ranks/runs/q+v-r8-s0" --compare "$OUT/ranks/runs/q+v-r8-s1" \
    --out "$OUT/analysis-seeds" "${THREADS[@]}"

fi

if [ "$section" = all ] || [ "$section" = variants ]; then
rm -rf "$OUT/variants"; mkdir -p "$OUT/variants"
echo "==> variants: the quickstart's run (q,v, 4 epochs) with an F32 base (LoRA r8), an NF4 base (QLoRA r8),"
echo "    DoRA r8, and AdaLoRA from r12 down to an average r8 against LoRA r8; seeds 0-4 (DoRA, AdaLoRA: 0-2)"
for seed in 0 1 2 3 4; do
    for variant in lora qlora dora adalora; do
        if [ "$seed" -gt 2 ] && { [ "$variant" = dora ] || [ "$variant" = adalora ]; }; then continue; fi
        extra=()
        case $variant in
            qlora) extra=(--rank 8 --quantize nf4) ;;
            dora) extra=(--rank 8 --dora) ;;
            adalora) extra=(--rank 12 --adalora --target-rank 8 --tinit 75 --tfinal 150 --delta-t 10) ;;
            *) extra=(--rank 8) ;;
        esac
        run="$OUT/variants/$variant-s$seed"
        "$LORA" finetune --base "$BASE" "${TRAIN[@]}" --targets q,v --epochs 4 --eval-every 188 --seed "$seed" \
            --out "$run" "${extra[@]}" "${THREADS[@]}" 2>&1 | tr '\r' '\n' | grep -vE '^step [0-9]+/' > "$run.log"
        grep -E "best validation|AdaLoRA:|base: projections" "$run.log" | sed "s|^|$variant seed $seed: |"
        eval_extra=()
        [ "$variant" = qlora ] && eval_extra=(--quantize nf4)
        "$LORA" eval --base "$BASE" --adapter "$run" --data "$DATA/test.json" --template datasets/template.json \
            --group-by family --show-examples 0 "${eval_extra[@]}" "${THREADS[@]}" > "$run-eval.json" 2>/dev/null
    done
done
fi
echo "done: $OUT"
