#!/usr/bin/env bash
# autodidact against PyTorch (CPU wheel from PyPI) on the same training workloads, same
# thread counts, interleaved in one invocation; prints a table of throughput, ratio
# (autodidact / PyTorch), peak RSS and model FLOPs utilization, and keeps the raw records.
#
#   scripts/bench-vs-pytorch.sh                        # all workloads, 1 and 2 threads, 3 rounds
#   ROUNDS=1 STEPS=5 THREADS="2" WORKLOADS="mlm-small" scripts/bench-vs-pytorch.sh
#
# Workloads (benches/workloads.rs and scripts/bench/torch_bench.py build the same models):
#   mlm-small      BERT h128, 2 layers, 4 heads, FFN 512, vocab 8192, seq 128, batch 32
#   mlm-base       BERT h256, 4 layers, 4 heads, FFN 1024, same data
#   simclr-resnet  ResNet-18 layout width 16, 32x32x3, batch 256 (512 views), NT-Xent
#   mae-vit        ViT dim 192 depth 4 heads 3 patch 4, decoder 96x2, 75% masking, batch 256
# A step is forward + backward + AdamW on pre-generated inputs; every workload runs in its
# own process (so peak RSS is per workload), warm-up steps are excluded, and each
# (workload, threads) pair alternates autodidact and PyTorch ROUNDS times; throughput is
# items per median step time over all rounds. MFU: each step's FLOPs (counted by PyTorch's
# torch.utils.flop_counter on its model) times steps/s, over the machine's peak fp32 GEMM
# rate: the faster of PyTorch's (MKL) and autodidact's (gemm crate) 2048x2048 matmul.
#
# Needs python3 with venv; the virtualenv (torch, numpy) goes to $VENV (.venv-torch).
# Results: bench-results/vs-pytorch-<UTC time>.jsonl (git-ignored) and the table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-8}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-"1 2"}
WORKLOADS=${WORKLOADS:-"mlm-small mlm-base simclr-resnet mae-vit"}
VENV=${VENV:-.venv-torch}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/autodidact-target}

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV (torch, numpy) ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch numpy
fi
cargo build --release --quiet --example bench_workload -p autodidact
ours="$CARGO_TARGET_DIR/release/examples/bench_workload"

mkdir -p bench-results
out="bench-results/vs-pytorch-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
echo "raw records: $out" >&2
for t in $THREADS; do
    "$VENV/bin/python" scripts/bench/torch_bench.py --workload gemm-peak --threads "$t" >> "$out"
    RAYON_NUM_THREADS=$t "$ours" --workload gemm-peak --threads "$t" >> "$out"
done
for round in $(seq 1 "$ROUNDS"); do
    for t in $THREADS; do
        for w in $WORKLOADS; do
            echo "round $round/$ROUNDS  threads $t  $w" >&2
            RAYON_NUM_THREADS=$t "$ours" --workload "$w" --threads "$t" --steps "$STEPS" --warmup "$WARMUP" >> "$out"
            OMP_NUM_THREADS=$t "$VENV/bin/python" scripts/bench/torch_bench.py --workload "$w" --threads "$t" \
                --steps "$STEPS" --warmup "$WARMUP" --count-flops >> "$out"
        done
    done
done
python3 scripts/bench/summarize.py "$out"
