# Does an MLM encoder use context? Splits held-out masked-token accuracy into its parts.
#
# A BERT MLM run is scored on targets that are 80% [MASK], 10% a random token and 10% the
# original token; a model that only learned to copy its input and the unigram distribution
# already gets about 10% + 0.8 x unigram. This script loads an exported run
# (`autodidact export RUN --out DIR`) in HF transformers and reports, on the run's held-out
# shard:
#   * top-1 accuracy at positions replaced by [MASK] (what context prediction is about),
#   * top-1 accuracy at the same positions left unchanged (copying),
#   * the unigram baseline (most frequent training token), and
#   * a count-based predictor from the immediate neighbours, trained on the run's training
#     shard: argmax_w c(left, w) c(w, right) / c(w) (add-0.1), i.e. what the data offers to a
#     model that uses only the two adjacent tokens.
#
#   autodidact export runs/bbc-mlm --out /tmp/bbc-mlm-hf
#   python scripts/reference/mlm_context_probe.py /tmp/bbc-mlm-hf runs/bbc-mlm
#
# Needs torch, transformers and numpy (`pip install torch transformers numpy` in a virtualenv).
import argparse
import collections
import json
import os

import numpy as np
import torch
from transformers import BertForMaskedLM


def shard_tokens(run_dir, split):
    index = json.load(open(os.path.join(run_dir, "shards", "index.json")))
    dtype = {"u16": "<u2", "u32": "<u4"}[index["dtype"]]
    parts = [np.fromfile(os.path.join(run_dir, "shards", s["file"]), dtype=dtype) for s in index[split]["shards"]]
    return np.concatenate(parts).astype(np.int64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("export_dir", help="`autodidact export` output (BertForMaskedLM)")
    p.add_argument("run_dir", help="the run directory (its shards/)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--sequences", type=int, default=128, help="held-out sequences scored")
    p.add_argument("--mask-ratio", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    model = BertForMaskedLM.from_pretrained(a.export_dir).eval()
    cfg = model.config
    cls_id, mask_id = 2, 4  # autodidact's special-token order: [PAD] [UNK] [CLS] [SEP] [MASK]
    n_special = 5

    train, held = shard_tokens(a.run_dir, "train"), shard_tokens(a.run_dir, "heldout")
    body = a.seq_len - 1
    n = min(a.sequences, len(held) // body)
    seqs = np.concatenate([np.full((n, 1), cls_id), held[: n * body].reshape(n, body)], axis=1)
    rng = np.random.default_rng(a.seed)
    chosen = (rng.random(seqs.shape) < a.mask_ratio) & (seqs >= n_special)
    chosen[:, [0, -1]] = False  # keep both neighbours inside the sequence
    x = torch.from_numpy(seqs)
    sel = torch.from_numpy(chosen)
    masked = x.clone()
    masked[sel] = mask_id
    with torch.no_grad():
        at_mask = model(input_ids=masked).logits.argmax(-1)[sel]
        at_copy = model(input_ids=x).logits.argmax(-1)[sel]
    truth = x[sel]

    counts = np.bincount(train, minlength=cfg.vocab_size).astype(np.float64)
    top = int(counts.argmax())
    left, right = collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter)
    for u, v in zip(train[:-1].tolist(), train[1:].tolist()):
        left[u][v] += 1
        right[v][u] += 1

    def neighbours(l, r):
        best, score = top, -1.0
        for w, c in left.get(l, {}).items():
            s = (c + 0.1) * (right.get(r, {}).get(w, 0) + 0.1) / (counts[w] + 1)
            if s > score:
                best, score = w, s
        return best

    rows, cols = np.nonzero(chosen)
    bigram = np.array([neighbours(seqs[i, j - 1], seqs[i, j + 1]) for i, j in zip(rows, cols)])
    truth_np = truth.numpy()
    print(f"{len(truth_np)} positions in {n} held-out sequences of {a.seq_len}")
    print(f"model, input [MASK]:         {100 * (at_mask == truth).float().mean().item():5.1f}%")
    print(f"model, input unchanged:      {100 * (at_copy == truth).float().mean().item():5.1f}%")
    print(f"unigram (most frequent):     {100 * np.mean(truth_np == top):5.1f}%")
    print(f"neighbour counts (l, r):     {100 * np.mean(truth_np == bigram):5.1f}%")


if __name__ == "__main__":
    main()
