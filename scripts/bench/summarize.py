"""Table of scripts/bench-vs-pytorch.sh results: one row per (workload, threads).

Reads the JSON lines the two benchmark programs print. Throughput is items per median step
time over every timed step of every round; peak RSS is the largest of the rounds; MFU is
achieved FLOP/s (PyTorch's FLOP count of one step, the same model on both sides) over the
peak fp32 GEMM rate measured at the same thread count (the faster of the two libraries).

    python3 scripts/bench/summarize.py bench-results/vs-pytorch-*.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def main(paths):
    steps = defaultdict(list)
    rss = defaultdict(float)
    meta = {}
    flops = {}
    peak = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r["workload"] == "gemm-peak":
                    peak.setdefault(r["threads"], {})[r["impl"]] = r["gflops"]
                    continue
                key = (r["workload"], r["threads"], r["impl"])
                steps[key].extend(r["step_seconds"])
                rss[key] = max(rss[key], r["peak_rss_mb"])
                meta[r["workload"]] = (r["items_per_step"], r["unit"])
                if r.get("flops_per_step"):
                    flops[r["workload"]] = r["flops_per_step"]
    rows = sorted({(w, t) for (w, t, _) in steps}, key=lambda k: (list(meta).index(k[0]), k[1]))
    for t, rates in sorted(peak.items()):
        print(f"peak fp32 GEMM, 2048x2048, {t} thread(s): " + ", ".join(f"{impl} {g:.1f} GFLOP/s" for impl, g in sorted(rates.items())))
    peak = {t: max(rates.values()) for t, rates in peak.items()}
    print()
    print("| workload | threads | autodidact | PyTorch | ratio | peak RSS autodidact / PyTorch | MFU autodidact / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for w, t in rows:
        items, unit = meta[w]
        rate = {}
        for impl in ("autodidact", "pytorch"):
            s = steps.get((w, t, impl))
            rate[impl] = items / statistics.median(s) if s else float("nan")
        ratio = rate["autodidact"] / rate["pytorch"]
        mfu = ""
        if w in flops and t in peak:
            m = [flops[w] * rate[i] / items / (peak[t] * 1e9) for i in ("autodidact", "pytorch")]
            mfu = f"{100 * m[0]:.1f}% / {100 * m[1]:.1f}%"
        print(
            f"| {w} | {t} | {rate['autodidact']:,.0f} {unit}/s | {rate['pytorch']:,.0f} {unit}/s | {ratio:.2f}x "
            f"| {rss[(w, t, 'autodidact')]:.0f} / {rss[(w, t, 'pytorch')]:.0f} MB | {mfu} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
