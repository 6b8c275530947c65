#!/usr/bin/env bash
# Soak test: trains a config (default: the quickstart MLM) for MINUTES minutes (default 30),
# sampling the process's resident memory every 10 s, with evaluation and a checkpoint every
# 250 steps. At the deadline it sends SIGTERM (a graceful stop: the step finishes, a
# checkpoint is written, exit status 4) and prints RSS after warm-up, at the end and at the
# peak, and the growth after warm-up. Samples: runs/soak/rss.csv; log: runs/soak.log.
#
#   scripts/soak.sh [MINUTES] [CONFIG]
#
# AUTODIDACT_BIN picks a prebuilt binary (default: build with cargo).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
config=${2:-configs/quickstart.toml}
if [ -z "${AUTODIDACT_BIN:-}" ]; then
  cargo build --release -p autodidact-cli
  AUTODIDACT_BIN=${CARGO_TARGET_DIR:-target}/release/autodidact
fi
mkdir -p runs
"$AUTODIDACT_BIN" pretrain "$config" --output-dir runs --overwrite -q \
  --set run.name=soak --set train.max_steps=10000000 --set train.eval_every=250 --set train.checkpoint_every=250 \
  >runs/soak.log 2>&1 &
pid=$!
# The run directory appears once the run starts; samples go next to its files.
csv=runs/soak-rss.csv
echo "seconds,rss_kb" >"$csv"
start=$(date +%s)
deadline=$((start + minutes * 60))
while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$rss" ] && echo "$(( $(date +%s) - start )),$rss" >>"$csv"
  sleep 10
done
kill -TERM "$pid" 2>/dev/null || true
set +e
wait "$pid"
status=$?
set -e
mv "$csv" runs/soak/rss.csv
echo "exit status $status (4 = stopped by the signal after writing a checkpoint)"
tail -n 2 runs/soak.log
python3 - runs/soak/rss.csv "$minutes" <<'PY'
import csv, sys
rows = [(int(r["seconds"]), int(r["rss_kb"]) / 1024) for r in csv.DictReader(open(sys.argv[1]))]
warm_at = min(300, float(sys.argv[2]) * 60 * 0.2)  # warm-up: 5 minutes (or 20% of a short run)
after = [(s, mb) for s, mb in rows if s >= warm_at]
if len(after) < 4:
    sys.exit("too few samples")
end = after[-1][0]
window = min(300, (end - warm_at) / 4)
mean = lambda xs: sum(xs) / len(xs)
first = mean([mb for s, mb in after if s < warm_at + window])
last = mean([mb for s, mb in after if s >= end - window])
ms, mm = mean([s for s, _ in after]), mean([mb for _, mb in after])
slope = sum((s - ms) * (mb - mm) for s, mb in after) / sum((s - ms) ** 2 for s, _ in after)
print(f"{len(rows)} samples over {end} s; warm-up until {warm_at:.0f} s")
print(f"RSS after warm-up: mean {first:.1f} MB over the first {window:.0f} s, {last:.1f} MB over the last {window:.0f} s "
      f"({100 * (last - first) / first:+.1f}%); range {min(mb for _, mb in after):.1f}-{max(mb for _, mb in after):.1f} MB; "
      f"linear trend {slope * 3600:+.1f} MB/hour")
PY
