#!/usr/bin/env bash
# DoRA training throughput: `lora bench --dora` against PyTorch + PEFT with use_dora=True, on configurations S and M
# of ../shared/bench (q_proj, v_proj at rank 8), in one sitting, rounds alternating between the two.
#
# The PyTorch side is ../shared/bench/torch_peft_bench.py itself, run by scripts/torch_peft_dora.py with PEFT's
# LoraConfig defaulting to use_dora=True. Both run with the environment as it is. Prints a Markdown table of medians
# (tokens/s, ratio, peak RSS) and keeps the raw JSON lines in $TMPDIR/lorakit-dora-bench/raw.jsonl.
#
# Usage: scripts/bench-dora-vs-pytorch.sh [--repeats N] [--threads N] [--out DIR] [--no-build]
# Needs: $PYTHON with torch, transformers, peft (default /tmp/refenv/bin/python, see ../shared/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=3
threads=$(nproc)
out=${TMPDIR:-/tmp}/lorakit-dora-bench
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --repeats) repeats=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-/tmp/refenv/bin/python}
TORCH_BENCH=${TORCH_BENCH:-../shared/bench/torch_peft_bench.py}
[ -x "$PYTHON" ] || { echo "no Python at $PYTHON: set PYTHON (needs torch transformers peft)" >&2; exit 1; }
[ -f "$TORCH_BENCH" ] || { echo "no reference benchmark at $TORCH_BENCH: set TORCH_BENCH" >&2; exit 1; }
if [ -z "${LORA:-}" ]; then
    if [ "$build" = 1 ]; then swift build -c release --product lora >&2; fi
    LORA=$(swift build -c release --show-bin-path)/lora
fi
[ -x "$LORA" ] || { echo "no release build of lora at $LORA (run without --no-build)" >&2; exit 1; }

mkdir -p "$out"
raw="$out/raw.jsonl"
: > "$raw"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A FLAGS
FLAGS[S]="--dim 288 --layers 6 --heads 6 --hidden 768 --vocab 32000 --seq 256 --batch 8 --targets q_proj,v_proj --rank 8"
FLAGS[M]="--dim 768 --layers 12 --heads 12 --hidden 2048 --vocab 32000 --seq 256 --batch 4 --targets q_proj,v_proj --rank 8"

# record CONFIG RUN: tags the last line of stdin and appends it to the raw file
record() {
    local line
    line=$(tail -n 1)
    [ -n "$line" ] || { echo "$2 on $1 printed nothing" >&2; exit 1; }
    printf '{"config": "%s", "run": "%s", "result": %s}\n' "$1" "$2" "$line" >> "$raw"
    echo "  $1 $2: $line" | cut -c1-160 >&2
}

for i in $(seq 1 "$repeats"); do
    for config in S M; do
        echo "== round $i/$repeats, $config" >&2
        # shellcheck disable=SC2086
        "$PYTHON" scripts/torch_peft_dora.py "$TORCH_BENCH" ${FLAGS[$config]} --threads "$threads" 2>/dev/null \
            | record "$config" torch-dora
        # shellcheck disable=SC2086
        "$LORA" bench ${FLAGS[$config]} --threads "$threads" --dora | record "$config" lora-dora
    done
done

"$PYTHON" - "$raw" "$repeats" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY' | tee "$out/table.md"
import json, statistics, sys, time
raw, repeats, load_start, load_end = sys.argv[1:5]
rows = [json.loads(line) for line in open(raw)]
def median(config, run, key):
    return statistics.median(r["result"][key] for r in rows if r["config"] == config and r["run"] == run)
print(f"Measured {time.strftime('%Y-%m-%d %H:%M')}, {repeats} rounds per cell (median), DoRA on q_proj and v_proj "
      f"at rank 8; load average {load_start} at the start, {load_end} at the end.\n")
print("| config | PyTorch+PEFT DoRA tok/s | lora --dora tok/s | ratio | trainable (both) | PyTorch peak RSS MiB | lora peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
for config in ["S", "M"]:
    torch_tps, lora_tps = median(config, "torch-dora", "tokens_per_s"), median(config, "lora-dora", "tokens_per_s")
    trainable = {r["result"]["trainable"] for r in rows if r["config"] == config}
    print(f"| {config} | {torch_tps:.1f} | {lora_tps:.1f} | {lora_tps / torch_tps:.2f}× | "
          f"{'/'.join(str(t) for t in sorted(trainable))} | {median(config, 'torch-dora', 'peak_rss_mib'):.0f} | "
          f"{median(config, 'lora-dora', 'peak_rss_mib'):.0f} |")
PY
