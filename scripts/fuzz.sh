#!/usr/bin/env bash
# Fuzzes LoRAKit's parsers of user files with libFuzzer and AddressSanitizer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600); TARGETs among FuzzSafeTensors FuzzModelConfig FuzzAdapterConfig FuzzDataset
# FuzzTemplate FuzzGGUF (default: all). FUZZ_JOBS=2 runs two targets at once (default 1). Each target starts from the
# committed seeds in Tests/Fuzz/corpus/NAME and grows a working corpus in .build-fuzz/corpus/NAME (kept between
# runs, never committed). A crash leaves its input in .build-fuzz/artifacts/ and makes the script fail; replay it
# with an ordinary build: `swift run FuzzSafeTensors .build-fuzz/artifacts/FuzzSafeTensors-crash-…`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
all=(FuzzSafeTensors FuzzModelConfig FuzzAdapterConfig FuzzDataset FuzzTemplate FuzzGGUF)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
jobs=${FUZZ_JOBS:-1}
scratch=.build-fuzz

corpus_name() {
    case $1 in
        FuzzSafeTensors) echo safetensors ;;
        FuzzModelConfig) echo model-config ;;
        FuzzAdapterConfig) echo adapter-config ;;
        FuzzDataset) echo dataset ;;
        FuzzTemplate) echo template ;;
        FuzzGGUF) echo gguf ;;
        *) echo "unknown fuzz target $1 (one of: ${all[*]})" >&2; exit 2 ;;
    esac
}

# -sanitize=fuzzer adds coverage instrumentation to every Swift module and links libFuzzer; LORAKIT_FUZZ makes
# FuzzSupport hand main over to it (lld: gold warns about every ASan symbol). Debug builds keep Swift's overflow
# and bounds checks (release uses -Ounchecked).
flags=(-Xswiftc -sanitize=fuzzer,address -Xswiftc -DLORAKIT_FUZZ -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld)
mkdir -p "$scratch/artifacts" "$scratch/logs"
for target in "${targets[@]}"; do
    corpus_name "$target" > /dev/null
    echo "building $target (log: $scratch/logs/build.log)"
    if ! swift build --scratch-path "$scratch" --product "$target" "${flags[@]}" > "$scratch/logs/build.log" 2>&1; then
        grep -E "error:" "$scratch/logs/build.log" | head -20
        exit 1
    fi
done
bin=$(swift build --scratch-path "$scratch" --show-bin-path "${flags[@]}")

run_one() {
    local target=$1 name
    name=$(corpus_name "$target")
    local work="$scratch/corpus/$name" log="$scratch/logs/$target.log"
    mkdir -p "$work"
    # The Swift runtime's backtracer would take the crash signal before libFuzzer can save the input.
    local status=0
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0:handle_abort=1 \
        "$bin/$target" "$work" "Tests/Fuzz/corpus/$name" \
        -dict=Tests/Fuzz/corpus/json.dict -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=4096 \
        -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$target-" > "$log" 2>&1 || status=$?
    local runs cov
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || echo 'cov: ?')
    if [ $status -eq 0 ]; then
        echo "$target: ${seconds}s, $runs inputs, $cov, corpus $(ls "$work" | wc -l) files, no crash"
    else
        echo "$target: FAILED (exit $status) after $runs inputs; see $log and $scratch/artifacts/"
    fi
    return $status
}

failed=0
pids=()
for target in "${targets[@]}"; do
    run_one "$target" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
exit $failed
