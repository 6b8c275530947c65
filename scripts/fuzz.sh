#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with cargo fuzz (libFuzzer + AddressSanitizer):
#   config       a pretraining / image / fine-tuning config file, and `--set` overrides
#   idx          an IDX image file (raw or gzip) and its label file
#   tokenizer    a tokenizer.json
#   safetensors  a weights file, as a transformers import and as a checkpoint
# Each target runs SECONDS seconds (default 300) from a seed corpus made here; a table of
# executions, corpus size and crashes follows. A crash leaves its input under
# fuzz/artifacts/TARGET/ and makes this script exit 1.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz (installed
# here when missing). The first build compiles burn with sanitizer flags: ~20 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(config idx tokenizer safetensors)
target_dir=${FUZZ_TARGET_DIR:-/var/tmp/autodidact-fuzz-target}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seed corpora: real inputs of each kind.
corpus=fuzz/corpus
mkdir -p "$corpus"/{config,idx,tokenizer,safetensors}
cp configs/*.toml "$corpus/config/"
cp crates/autodidact-models/tests/fixtures/hf-bert-tiny/tokenizer.json "$corpus/tokenizer/"
cp crates/autodidact-models/tests/fixtures/hf-bert-tiny/model.safetensors "$corpus/safetensors/"
python3 - "$corpus/idx" <<'PY'
import gzip, struct, sys
out = sys.argv[1]
images = struct.pack(">IIII", 0x803, 3, 4, 4) + bytes(range(48))
labels = struct.pack(">II", 0x801, 3) + bytes([0, 1, 2])
open(f"{out}/images.idx", "wb").write(images)
open(f"{out}/labels.idx", "wb").write(labels)
open(f"{out}/images.idx.gz", "wb").write(gzip.compress(images))
PY

cargo +nightly fuzz build --target-dir "$target_dir"
status=0
printf '%-12s %8s %12s %10s %8s %s\n' target seconds executions "corpus" crashes result
for t in "${targets[@]}"; do
  log=$(mktemp)
  marker=$(mktemp)
  start=$(date +%s)
  if cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$corpus/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 -timeout=60 -max_len=65536 >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see $log)"
    status=1
  fi
  # libFuzzer's own count and time ("Done N runs in S second(s)"); the wall time when it
  # stopped on a crash.
  ran=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | awk '{print $5}' | tail -1)
  ran=${ran:-$(( $(date +%s) - start ))}
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  crashes=$(find "fuzz/artifacts/$t" -type f -newer "$marker" 2>/dev/null | wc -l)
  rm -f "$marker"
  printf '%-12s %8s %12s %10s %8s %s\n' "$t" "$ran" "${execs:-?}" "$(ls "$corpus/$t" | wc -l)" "$crashes" "$result"
  [ "$result" = ok ] && rm -f "$log"
done
exit $status
