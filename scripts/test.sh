#!/usr/bin/env bash
# Builds LoRAKit and runs the whole test suite. Needs no Python and downloads nothing but Debian packages.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
set +e

echo "==> swift build"
swift build --build-tests 2>&1 | tee /tmp/lorakit-build.log | grep -E "error:|warning:|Compiling|Build complete" | grep -v "^\[" | tail -n 40
build_status=${PIPESTATUS[0]}
if [ "$build_status" -ne 0 ]; then echo "build failed"; exit "$build_status"; fi
# LoRAKit's own code builds without warnings (dependencies are not ours to fix).
if grep -E "$(pwd)/(Sources|Tests)/.*warning:" /tmp/lorakit-build.log; then
    echo "error: the build has warnings (above)"; exit 1
fi

echo "==> swift test"
# The suite is XCTest; Swift Testing would only add a closing line about zero tests.
swift test --skip-build --disable-swift-testing 2>&1 | tee /tmp/lorakit-test.log \
    | grep -vE "^Test Case .* (started|passed)" | grep -vE "^Test Suite .* (started|passed)"
status=${PIPESTATUS[0]}
# One plain closing line with the totals of the whole run.
summary=$(grep -E "Executed [0-9]+ tests?" /tmp/lorakit-test.log | tail -n 1)
executed=$(echo "$summary" | grep -oE "Executed [0-9]+" | grep -oE "[0-9]+")
failed=$(echo "$summary" | grep -oE "[0-9]+ failures?" | grep -oE "^[0-9]+")
skipped=$(echo "$summary" | grep -oE "[0-9]+ tests? skipped" | grep -oE "^[0-9]+" || echo 0)
if [ -n "$executed" ] && [ -n "$failed" ]; then
    echo "tests: $((executed - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
exit "$status"
