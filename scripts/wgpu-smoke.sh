#!/usr/bin/env bash
# Runs the smoke config on the wgpu backend. Without a GPU it uses Mesa's software Vulkan
# driver (lavapipe), installed here from Debian. Slow: the first step compiles shaders.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null; then
  apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/autodidact-target-wgpu}"
cargo build --release --locked -p autodidact-cli --features wgpu
out="$(mktemp -d)"
"$CARGO_TARGET_DIR/release/autodidact" pretrain configs/smoke-mlm.toml --backend wgpu \
  --output-dir "$out" --set train.max_steps="${STEPS:-60}" --set train.eval_every=0 "$@"
