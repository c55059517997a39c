#!/usr/bin/env bash
# Runs the whole test suite once under AddressSanitizer, in its own scratch path (.build-asan).
#
#   scripts/test-asan.sh [swift test arguments, e.g. --filter CheckpointsTests]
#
# The `lora` the CLI tests start is built with ASan too, so every bad input of docs/bad-inputs.md is also
# checked for memory errors. abort_on_error turns an ASan report in such a child into SIGABRT, which the CLI
# tests count as a crash (ASan's default exit status 1 would look like a clean user error).
set -euo pipefail
cd "$(dirname "$0")/.."

# Swift's own backtracer would take the signal before ASan prints its report.
export SWIFT_BACKTRACE=enable=no
# Leak checking is off: Foundation and the Swift runtime keep caches alive until exit by design.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0
swift test --scratch-path .build-asan --sanitize=address "$@"
