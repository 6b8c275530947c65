#!/usr/bin/env bash
# The label-efficiency study on BBC News (README, "Text specialists"): test accuracy with 1%,
# 10% and 100% of the training labels for an encoder (a) from scratch, (b) pretrained with
# MLM on unlabeled text that includes the BBC articles without labels, (c) the same plus
# SimCSE, (d) MLM plus contrastive crop views (configs/bbc-crops.toml); (b') MLM with a
# sequence-length curriculum (configs/bbc-mlm-seq8.toml, then configs/bbc-mlm-curriculum.toml)
# and (c') that plus SimCSE; plus a linear probe and kNN on the frozen encoders.
#
#   scripts/bbc-study.sh            # everything, seeds 0 1 2
#   SEEDS=0 scripts/bbc-study.sh    # one seed
#   SKIP_PRETRAIN=1 scripts/bbc-study.sh   # reuse the pretraining runs under runs/
#
# Prints a markdown table; every run's summary.json is under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-data.sh
cargo build --release -p autodidact-cli
bin=${CARGO_TARGET_DIR:-target}/release/autodidact
seeds=${SEEDS:-"0 1 2"}

if [ -z "${SKIP_PRETRAIN:-}" ]; then
    /usr/bin/time -f "%e s wall" "$bin" pretrain configs/bbc-mlm.toml --overwrite -q
    /usr/bin/time -f "%e s wall" "$bin" pretrain configs/bbc-simcse.toml --overwrite -q
    /usr/bin/time -f "%e s wall" "$bin" pretrain configs/bbc-crops.toml --overwrite -q
    /usr/bin/time -f "%e s wall" "$bin" pretrain configs/bbc-mlm-seq8.toml --overwrite -q
    /usr/bin/time -f "%e s wall" "$bin" pretrain configs/bbc-mlm-curriculum.toml --overwrite -q
    /usr/bin/time -f "%e s wall" "$bin" pretrain configs/bbc-simcse.toml --overwrite -q \
        --set 'run.name="bbc-simcse-curriculum"' --set 'model.init_from="../runs/bbc-mlm-curriculum"'
fi

ft() { # name, extra --set arguments...
    local name=$1; shift
    "$bin" finetune configs/finetune-bbc.toml --overwrite -q --set "run.name=\"$name\"" "$@" > /dev/null
}
for seed in $seeds; do
    for frac in 0.01 0.1 1.0; do
        ft "bbc-scratch-$frac-s$seed" --set "data.label_fraction=$frac" --set run.seed=$seed --set model.random_init=true
        ft "bbc-mlm-$frac-s$seed" --set "data.label_fraction=$frac" --set run.seed=$seed
        for enc in simcse crops mlm-curriculum simcse-curriculum; do
            ft "bbc-$enc-$frac-s$seed" --set "data.label_fraction=$frac" --set run.seed=$seed --set "model.init_from=\"../runs/bbc-$enc\""
        done
    done
    for enc in mlm simcse crops mlm-curriculum simcse-curriculum; do
        ft "bbc-probe-$enc-s$seed" --set run.seed=$seed --set "model.init_from=\"../runs/bbc-$enc\"" --set model.freeze_encoder=true --set 'model.pooling="mean"' --set train.lr=1e-2
    done
done

python3 - "$seeds" <<'PY'
import json, sys
seeds = sys.argv[1].split()
def s(name): return json.load(open(f"runs/{name}/summary.json"))
def mean(xs): return sum(xs) / len(xs)
def sd(xs): return (sum((x - mean(xs)) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
def cell(kind, frac):
    runs = [s(f"bbc-{kind}-{frac}-s{seed}") for seed in seeds]
    acc = [100 * r["test"]["accuracy"] for r in runs]
    f1 = mean([r["test"]["macro_f1"] for r in runs])
    t = mean([r["wall_time_s"] for r in runs])
    return f"{mean(acc):.1f} ± {sd(acc):.1f}% / {f1:.3f} ({runs[0]['examples']['train']} ex., {t:.0f} s)"
print("| encoder | 1% labels | 10% labels | 100% labels |")
print("|---|---|---|---|")
for kind, label in [("scratch", "(a) from scratch"), ("mlm", "(b) MLM"), ("simcse", "(c) MLM + SimCSE"), ("crops", "(d) MLM + crop views"),
                    ("mlm-curriculum", "(b') MLM, sequence-length curriculum"), ("simcse-curriculum", "(c') (b') + SimCSE")]:
    print(f"| {label} | " + " | ".join(cell(kind, f) for f in ["0.01", "0.1", "1.0"]) + " |")
print()
print("| frozen encoder (mean pooling) | linear probe acc. | kNN acc. (k=20) |")
print("|---|---|---|")
for enc in ["mlm", "simcse", "crops", "mlm-curriculum", "simcse-curriculum"]:
    runs = [s(f"bbc-probe-{enc}-s{seed}") for seed in seeds]
    lp = sum(r["test"]["accuracy"] for r in runs) / len(runs)
    knn = sum(r["test"]["knn_accuracy"] for r in runs) / len(runs)
    print(f"| {enc} | {100*lp:.1f}% | {100*knn:.1f}% |")
for name in ["bbc-mlm", "bbc-simcse", "bbc-crops", "bbc-mlm-seq8", "bbc-mlm-curriculum", "bbc-simcse-curriculum"]:
    r = s(name)
    print(f"\n{name}: {r['steps']} steps, {r['wall_time_s']:.0f} s, {r['tokens_per_s']:.0f} tokens/s, final eval {r['final_eval']}")
PY
