#!/usr/bin/env bash
# Installs the Debian packages LoRAKit builds against (OpenBLAS, SentencePiece, pkg-config), when missing.
# Sourced by quickstart.sh and test.sh; needs root (or sudo) only when something is missing.
set -euo pipefail

lorakit_missing_packages() {
    local missing=()
    for pkg in libopenblas-dev libsentencepiece-dev pkg-config; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    echo "${missing[@]:-}"
}

missing=$(lorakit_missing_packages)
if [ -n "$missing" ]; then
    echo "==> installing Debian packages: $missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq $missing >/dev/null
fi
if ! command -v swift >/dev/null 2>&1; then
    echo "error: swift is not on PATH (LoRAKit needs Swift 6.x: https://swift.org/install)" >&2
    exit 1
fi
