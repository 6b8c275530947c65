#!/usr/bin/env bash
# The Fashion-MNIST study (README, "Image specialists"): SimCLR and MAE pretrained on the 60k
# training images without labels, then kNN and linear-probe accuracy on the 10k test images
# from frozen features, beside two baselines computed by the same code (raw pixels, a
# randomly initialized encoder) and the same SimCLR recipe in PyTorch.
#
#   scripts/fashion-mnist-study.sh             # everything
#   SKIP_TORCH=1 scripts/fashion-mnist-study.sh  # without the PyTorch side
#
# Prints a markdown table; every figure is in runs/*/summary.json and runs/*/eval-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-data.sh fashion-mnist
cargo build --release -p autodidact-cli
bin=${CARGO_TARGET_DIR:-target}/release/autodidact

for cfg in simclr-fashion-mnist mae-fashion-mnist; do
    [ -f "runs/$cfg/summary.json" ] || "$bin" pretrain "configs/$cfg.toml" --overwrite -q
    for features in pixels random; do
        [ -f "runs/$cfg/eval-$features.json" ] || "$bin" eval "runs/$cfg" --features "$features" > /dev/null
    done
done
if [ -z "${SKIP_TORCH:-}" ] && [ ! -f runs/simclr-torch.json ]; then
    venv=${VENV:-.venv-torch}
    [ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q torch numpy; }
    "$venv/bin/python" scripts/reference/simclr_torch.py --epochs 2 --width 16 --lr 2e-3 --warmup-steps 46 \
        --hidden 2048 --temperature 0.2 --solarize 0.2 --json-out runs/simclr-torch.json
fi

python3 - <<'PY'
import json, os
def load(p): return json.load(open(p)) if os.path.exists(p) else None
print("| features | kNN (k = 20) | linear probe | pretraining wall time | images/s |")
print("|---|---|---|---|---|")
for cfg, name in [("simclr-fashion-mnist", "ResNet"), ("mae-fashion-mnist", "ViT")]:
    s = load(f"runs/{cfg}/summary.json")
    if not s:
        continue
    for feat, label in [("pixels", "raw pixels"), ("random", f"random-init {name}")]:
        e = load(f"runs/{cfg}/eval-{feat}.json")["frozen_eval"]
        print(f"| {label} | {100*e['knn_accuracy']:.2f}% | {100*e['linear_probe_accuracy']:.2f}% | – | – |")
    e = s["frozen_eval"]
    print(f"| {s['objective']} {name}, {s['epochs']:.0f} epochs | {100*e['knn_accuracy']:.2f}% | {100*e['linear_probe_accuracy']:.2f}% "
          f"| {s['wall_time_s']:.0f} s | {s['images_per_s']:.1f} |")
t = load("runs/simclr-torch.json")
if t:
    print(f"| PyTorch SimCLR ResNet, same recipe | {100*t['knn_top1']:.2f}% | {100*t['linear_top1']:.2f}% "
          f"| {t.get('train_wall_s', float('nan')):.0f} s | {t.get('train_images_per_s', float('nan')):.1f} |")
PY
