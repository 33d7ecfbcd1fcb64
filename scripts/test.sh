#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs the whole test suite on every backend:
# flex (default CPU backend), ndarray, and wgpu on Mesa's software Vulkan driver (lavapipe).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

# Tests run on every compiled backend; lavapipe wants a runtime directory.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# The CPU engine's fixed kernel rules, whatever `alexvgg tune` recorded on this machine.
export ALEXVGG_TUNING=off
# Tests run on every compiled backend; the software Vulkan device serves wgpu without a GPU.
cargo test --locked --workspace --features ndarray,wgpu "$@"
