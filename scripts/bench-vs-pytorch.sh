#!/usr/bin/env bash
# LoRAKit against the tools a user would otherwise run, on this machine, in one sitting:
#   training  — `lora bench` vs PyTorch + PEFT (shared/bench/torch_peft_bench.py) on configurations S and M;
#               lora runs twice: with the environment as it is, and with OPENBLAS_CORETYPE (and
#               OPENBLAS_L2_SIZE) unset, i.e. OpenBLAS's native kernels for this CPU;
#   generation — `lora bench --generate 128` vs llama.cpp (llama-cpp-python) on the M model exported as F32 GGUF
#               by `lora merge --format gguf`, greedy, same prompt ids, 128 new tokens, end-of-sequence ignored;
#   with --dora, DoRA training instead: `lora bench --dora` vs the same reference script run with PEFT's
#               use_dora=True (scripts/torch_peft_dora.py), the environment as it is, no generation;
#   with --grad-checkpoint, gradient checkpointing on both sides: `lora bench --grad-checkpoint` vs the reference
#               script with transformers' checkpointing (scripts/torch_peft_checkpointing.py), on S, M and L (M's
#               model with 4 x 1024 tokens and every projection adapted, where activations dominate memory).
# Prints a Markdown table (medians over --repeats runs; each run of every tool back to back) and writes it, the raw
# JSON lines and the exported model into --out (default $TMPDIR/lorakit-bench). Speed is never measured by the
# test suite; this script is where it is measured.
#
# Usage: scripts/bench-vs-pytorch.sh [--repeats N] [--threads N] [--out DIR] [--no-build] [--skip-generation]
#                                    [--dora | --grad-checkpoint]
# Needs: a Python with torch, transformers, peft (and llama-cpp-python for generation): $PYTHON, default
# /tmp/refenv/bin/python (see ../shared/bench/README.md). LORA=path/to/lora runs that binary instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=3
threads=$(nproc)
out=${TMPDIR:-/tmp}/lorakit-bench
build=1
generation=1
dora=0
checkpointing=0
while [ $# -gt 0 ]; do
    case "$1" in
        --repeats) repeats=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --skip-generation) generation=0; shift ;;
        --dora) dora=1; generation=0; shift ;;
        --grad-checkpoint) checkpointing=1; generation=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-/tmp/refenv/bin/python}
TORCH_BENCH=${TORCH_BENCH:-../shared/bench/torch_peft_bench.py}
[ -x "$PYTHON" ] || { echo "no Python at $PYTHON: set PYTHON (needs torch transformers peft)" >&2; exit 1; }
[ -f "$TORCH_BENCH" ] || { echo "no reference benchmark at $TORCH_BENCH: set TORCH_BENCH" >&2; exit 1; }

# LORA=path/to/lora uses that binary as it is (no build).
if [ -z "${LORA:-}" ]; then
    if [ "$build" = 1 ]; then swift build -c release --product lora >&2; fi
    LORA=$(swift build -c release --show-bin-path)/lora
fi
[ -x "$LORA" ] || { echo "no release build of lora at $LORA (run without --no-build)" >&2; exit 1; }

mkdir -p "$out"
raw="$out/raw.jsonl"
: > "$raw"
# Other processes change everything on a small machine: the load average goes into the table.
cut -d' ' -f1-3 /proc/loadavg > "$out/load-start"

declare -A FLAGS
FLAGS[S]="--dim 288 --layers 6 --heads 6 --hidden 768 --vocab 32000 --seq 256 --batch 8 --targets q_proj,v_proj --rank 8"
FLAGS[M]="--dim 768 --layers 12 --heads 12 --hidden 2048 --vocab 32000 --seq 256 --batch 4 --targets q_proj,v_proj --rank 8"
FLAGS[L]="--dim 768 --layers 12 --heads 12 --hidden 2048 --vocab 32000 --seq 1024 --batch 4 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --rank 8 --steps 2 --warmup 1"
configs="S M"
if [ "$checkpointing" = 1 ]; then configs="S M L"; fi

# record CONFIG RUN JSON: tags a result line and appends it to the raw file
record() {
    local config=$1 run=$2 line
    line=$(tail -n 1)
    [ -n "$line" ] || { echo "$run on $config printed nothing" >&2; exit 1; }
    printf '{"config": "%s", "run": "%s", "result": %s}\n' "$config" "$run" "$line" >> "$raw"
    echo "  $config $run: $line" | cut -c1-200 >&2
}

for i in $(seq 1 "$repeats"); do
    for config in $configs; do
        echo "== round $i/$repeats, $config" >&2
        if [ "$checkpointing" = 1 ]; then
            # shellcheck disable=SC2086
            "$PYTHON" scripts/torch_peft_checkpointing.py "$TORCH_BENCH" ${FLAGS[$config]} --threads "$threads" \
                2>/dev/null | record "$config" torch-checkpointing
            # shellcheck disable=SC2086
            env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$LORA" bench ${FLAGS[$config]} --threads "$threads" \
                --grad-checkpoint | record "$config" lora-checkpointing
            continue
        fi
        if [ "$dora" = 1 ]; then
            # shellcheck disable=SC2086
            "$PYTHON" scripts/torch_peft_dora.py "$TORCH_BENCH" ${FLAGS[$config]} --threads "$threads" 2>/dev/null \
                | record "$config" torch-dora
            # shellcheck disable=SC2086
            "$LORA" bench ${FLAGS[$config]} --threads "$threads" --dora | record "$config" lora-dora
            continue
        fi
        # shellcheck disable=SC2086
        "$PYTHON" "$TORCH_BENCH" ${FLAGS[$config]} --threads "$threads" 2>/dev/null | record "$config" torch
        # shellcheck disable=SC2086
        "$LORA" bench ${FLAGS[$config]} --threads "$threads" | record "$config" lora-env
        # shellcheck disable=SC2086
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$LORA" bench ${FLAGS[$config]} --threads "$threads" \
            | record "$config" lora-native
        # the same with every product on OpenBLAS (LoRAKit's kernel off), for the kernel's share of the difference
        # shellcheck disable=SC2086
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$LORA" bench ${FLAGS[$config]} --threads "$threads" \
            --gemm openblas | record "$config" lora-openblas
    done
done

if [ "$generation" = 1 ]; then
    model="$out/m-model"
    rm -rf "$model"
    # shellcheck disable=SC2086
    "$LORA" bench ${FLAGS[M]} --save-model "$model" 2>/dev/null
    # Any SentencePiece model serves: the GGUF pads the vocabulary to 32000 pieces, and the ids are given directly.
    cp Tests/Fixtures/tokenizer/bpe.model "$model/tokenizer.model"
    "$LORA" merge --base "$model" --out "$out/m-f32.gguf" --format gguf --dtype f32 --overwrite >/dev/null 2>&1
    cat > "$out/llama_generate.py" <<'EOF'
# Greedy generation with llama.cpp: the prompt ids, then N tokens, each picked by argmax and evaluated.
import json, sys, time
import numpy as np
from llama_cpp import Llama
path, prompt, n, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=len(prompt) + n + 8, n_batch=512,
            verbose=False)
vocab = llm.n_vocab()
t0 = time.perf_counter(); llm.eval(prompt); t1 = time.perf_counter()
tokens = []
for _ in range(n):
    nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))))
    tokens.append(nxt)
    llm.eval([nxt])
t2 = time.perf_counter()
print(json.dumps({"impl": "llama.cpp", "tokens_per_s": round(n / (t2 - t1), 2), "prompt_s": round(t1 - t0, 4),
                  "decode_s": round(t2 - t1, 4), "new_tokens": n, "tokens": tokens}))
EOF
    for i in $(seq 1 "$repeats"); do
        echo "== generation round $i/$repeats" >&2
        line=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$LORA" bench --generate 128 --base "$model" --threads "$threads")
        echo "$line" | record M lora-generate
        prompt=$(echo "$line" | "$PYTHON" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prompt"]))')
        "$PYTHON" "$out/llama_generate.py" "$out/m-f32.gguf" "$prompt" 128 "$threads" | record M llama.cpp
    done
fi

cut -d' ' -f1-3 /proc/loadavg > "$out/load-end"

# The table: medians per (config, run); ratios of medians.
"$PYTHON" - "$raw" "$threads" "$repeats" "$(cat "$out/load-start")" "$(cat "$out/load-end")" <<'EOF' | tee "$out/table.md"
import json, statistics, subprocess, sys, datetime
raw, threads, repeats, load_start, load_end = sys.argv[1:6]
rows = [json.loads(l) for l in open(raw)]
def pick(config, run, key):
    values = [r["result"][key] for r in rows if r["config"] == config and r["run"] == run and key in r["result"]]
    return statistics.median(values) if values else None
def first(config, run, key):
    for r in rows:
        if r["config"] == config and r["run"] == run and key in r["result"]:
            return r["result"][key]
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
if any(r["run"] == "lora-dora" for r in rows):
    print(f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {cpu}, {cores} cores, {threads} threads, "
          f"median of {repeats} runs per cell; DoRA on both sides; torch {first('S', 'torch-dora', 'torch')}; lora's "
          f"matrix kernel: {first('S', 'lora-dora', 'gemm')}; load average {load_start} at the start, {load_end} at "
          f"the end.")
    print()
    print("| config | PyTorch+PEFT DoRA tok/s | lora --dora tok/s | ratio | trainable (both) | PyTorch peak RSS MiB | lora peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for config in ["S", "M"]:
        torch, lora = pick(config, "torch-dora", "tokens_per_s"), pick(config, "lora-dora", "tokens_per_s")
        if torch is None or lora is None:
            continue
        trainable = sorted({r["result"]["trainable"] for r in rows if r["config"] == config})
        print(f"| {config} | {torch:.1f} | {lora:.1f} | {lora / torch:.2f}× | {'/'.join(map(str, trainable))} | "
              f"{pick(config, 'torch-dora', 'peak_rss_mib'):.0f} | {pick(config, 'lora-dora', 'peak_rss_mib'):.0f} |")
    sys.exit(0)
if any(r["run"] == "lora-checkpointing" for r in rows):
    print(f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {cpu}, {cores} cores, {threads} threads, "
          f"median of {repeats} runs per cell; gradient checkpointing on both sides (transformers' non-reentrant; "
          f"lora --grad-checkpoint, OPENBLAS_CORETYPE unset); torch {first('S', 'torch-checkpointing', 'torch')}; "
          f"load average {load_start} at the start, {load_end} at the end.")
    print()
    print("| config | PyTorch+PEFT tok/s | lora tok/s | ratio | PyTorch peak RSS MiB | lora peak RSS MiB | RSS ratio |")
    print("|---|---|---|---|---|---|---|")
    for config in ["S", "M", "L"]:
        torch = pick(config, "torch-checkpointing", "tokens_per_s")
        lora = pick(config, "lora-checkpointing", "tokens_per_s")
        if torch is None or lora is None:
            continue
        torch_rss = pick(config, "torch-checkpointing", "peak_rss_mib")
        lora_rss = pick(config, "lora-checkpointing", "peak_rss_mib")
        print(f"| {config} | {torch:.1f} | {lora:.1f} | {lora / torch:.2f}× | {torch_rss:.0f} | {lora_rss:.0f} | "
              f"{lora_rss / torch_rss:.2f} |")
    sys.exit(0)
print(f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {cpu}, {cores} cores, {threads} threads, "
      f"median of {repeats} runs per cell; torch {first('S', 'torch', 'torch')}; "
      f"OpenBLAS core: environment as is = {first('S', 'lora-env', 'openblas_core')} "
      f"(OPENBLAS_CORETYPE={first('S', 'lora-env', 'openblas_coretype') or 'unset'}), "
      f"native = {first('S', 'lora-native', 'openblas_core')}; lora's matrix kernel: "
      f"{first('S', 'lora-native', 'gemm')}; load average {load_start} at the start, "
      f"{load_end} at the end.")
print()
print("| config | PyTorch+PEFT tok/s | lora (env) tok/s | lora (native) tok/s | ratio env | ratio native | "
      "lora, all products on OpenBLAS (native) tok/s | "
      "lora GFLOP/s (native) | sgemm ceiling GFLOP/s | share of ceiling | PyTorch peak RSS MiB | lora peak RSS MiB | RSS ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for config in ["S", "M"]:
    torch = pick(config, "torch", "tokens_per_s")
    env, native = pick(config, "lora-env", "tokens_per_s"), pick(config, "lora-native", "tokens_per_s")
    if torch is None or env is None or native is None:
        continue
    openblas = pick(config, "lora-openblas", "tokens_per_s")
    openblas_cell = f"{openblas:.1f} ({openblas / torch:.2f}×)" if openblas is not None else "—"
    gflops, ceiling = pick(config, "lora-native", "gflops"), pick(config, "lora-native", "sgemm_peak_gflops")
    trss, lrss = pick(config, "torch", "peak_rss_mib"), pick(config, "lora-native", "peak_rss_mib")
    print(f"| {config} | {torch:.1f} | {env:.1f} | {native:.1f} | {env / torch:.2f}× | {native / torch:.2f}× | "
          f"{openblas_cell} | {gflops:.1f} | {ceiling:.1f} | {gflops / ceiling:.0%} | {trss:.0f} | {lrss:.0f} | {lrss / trss:.2f} |")
gen, ref = pick("M", "lora-generate", "tokens_per_s"), pick("M", "llama.cpp", "tokens_per_s")
if gen is not None and ref is not None:
    print()
    print("| generation (M, F32, 128 new tokens, greedy) | tokens/s |")
    print("|---|---|")
    print(f"| llama.cpp (llama-cpp-python) | {ref:.1f} |")
    print(f"| lora (OPENBLAS_CORETYPE unset) | {gen:.1f} |")
    print(f"| ratio | {gen / ref:.2f}× |")
    same = first("M", "lora-generate", "tokens") == first("M", "llama.cpp", "tokens")
    print()
    print(f"Both generated {'the same' if same else 'different'} token ids.")
EOF
