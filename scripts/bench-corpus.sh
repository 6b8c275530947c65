#!/usr/bin/env bash
# Corpus preparation speed and training memory against corpus size.
#
# Builds corpora of SIZES_MB megabytes from copies of the embedded Gutenberg books (one
# document per file), then runs the quickstart model on each with the same tokenizer for
# STEPS steps, and reports the tokenize-and-shard rate (MB/s of text, from summary.json)
# and the process's peak RSS (/usr/bin/time -v). Memory must not grow with the corpus: the
# shards are read by position, sequence by sequence (no memory map to fill the RSS).
#
#   scripts/bench-corpus.sh                       # 100 MB and 2000 MB, 200 steps
#   SIZES_MB="20 200" STEPS=50 scripts/bench-corpus.sh
#
# Needs about 3.5x the largest size in free disk under $WORK (text plus shards).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES_MB=${SIZES_MB:-"100 2000"}
STEPS=${STEPS:-200}
WORK=${WORK:-/var/tmp/autodidact-corpus-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/autodidact-target}

cargo build --release --quiet -p autodidact-cli
bin="$CARGO_TARGET_DIR/release/autodidact"
mkdir -p "$WORK"
# One tokenizer for every size, so the runs differ only in the corpus.
[ -f "$WORK/tokenizer.json" ] || "$bin" tokenizer train --input assets/corpus/gutenberg --out "$WORK/tokenizer.json" --vocab-size 4096

for mb in $SIZES_MB; do
    corpus="$WORK/corpus-${mb}MB"
    if [ ! -f "$corpus/.complete" ]; then
        echo "writing a ${mb} MB corpus to $corpus ..." >&2
        rm -rf "$corpus" && mkdir -p "$corpus"
        python3 - "$corpus" "$mb" assets/corpus/gutenberg/*.txt.gz <<'PY'
import gzip, os, sys
out, target = sys.argv[1], int(sys.argv[2]) * 1_000_000
books = [(os.path.basename(p)[:-7], gzip.open(p, "rb").read()) for p in sys.argv[3:]]
written, copy = 0, 0
while written < target:
    for name, text in books:
        with open(os.path.join(out, f"{copy:05d}-{name}.txt"), "wb") as f:
            f.write(text)
        written += len(text)
    copy += 1
open(os.path.join(out, ".complete"), "w").close()
PY
    fi
    echo "pretraining ${STEPS} steps on ${mb} MB ..." >&2
    /usr/bin/time -v -o "$WORK/time-${mb}MB.txt" "$bin" pretrain configs/quickstart.toml --output-dir "$WORK/runs" --overwrite \
        --set run.name="corpus-${mb}MB" --set data.path="$corpus" --set tokenizer.path="$WORK/tokenizer.json" \
        --set train.max_steps="$STEPS" --set train.warmup_steps=10 --set train.eval_every="$STEPS" \
        --set train.checkpoint_every="$STEPS" > /dev/null 2> "$WORK/log-${mb}MB.txt"
done

python3 - "$WORK" $SIZES_MB <<'PY'
import json, re, sys
work, sizes = sys.argv[1], sys.argv[2:]
print("| corpus | text | tokens | tokenize + shard | rate | peak RSS |")
print("|---|---|---|---|---|---|")
for mb in sizes:
    s = json.load(open(f"{work}/runs/corpus-{mb}MB/summary.json"))
    c = s["corpus"]
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/time-{mb}MB.txt").read()).group(1)) / 1024
    tokens = c["train_tokens"] + c["heldout_tokens"]
    print(f"| {mb} MB | {c['bytes'] / 1e6:.0f} MB | {tokens / 1e6:.0f} M | {c['sharding_s']:.1f} s | {c['bytes'] / 1e6 / c['sharding_s']:.1f} MB/s | {rss:.0f} MB |")
PY
