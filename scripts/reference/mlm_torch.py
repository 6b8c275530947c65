# PyTorch / HF-transformers reference for autodidact's MLM pretraining.
#
# Trains `transformers.BertForMaskedLM` on exactly the token data of a finished autodidact
# run directory (its `shards/` and `tokenizer.json`), with the hyper-parameters of its
# resolved `config.toml`, replicating the Rust pipeline:
#
#   * sequences: the token stream cut into windows of seq_len-1 tokens, each prefixed with
#     [CLS]; floor(len / (seq_len-1)) sequences; a fresh random permutation every epoch;
#   * dynamic masking per batch (Devlin et al. 2019): each non-special token is chosen with
#     prob mask_ratio; chosen -> [MASK] (mask_token_prob), a random non-special token
#     (random_token_prob), unchanged otherwise; at least one target per batch;
#   * loss: mean cross-entropy over the masked positions only (the MLM head is applied to
#     the gathered masked hidden states, as the Rust model does; same math as HF's labels=
#     path with -100, just cheaper);
#   * AdamW (no decay on biases / LayerNorm), global grad-norm clipping, linear warm-up
#     lr*(step+1)/warmup then cosine to min_lr at max_steps;
#   * eval: the first eval_batches batches of held-out sequences, in order, masked once
#     with a fixed seed; target-weighted mean loss and accuracy, at step 0 and every
#     eval_every steps.
#
# Random streams (shuffle, masking, init, dropout) are PyTorch/numpy ones, so the numbers
# are statistically, not bit-for-bit, comparable with the Rust run.
#
# Setup and run (CPU):
#   python3 -m venv /tmp/venv-torch
#   /tmp/venv-torch/bin/pip install torch transformers
#   /tmp/venv-torch/bin/python scripts/reference/mlm_torch.py --run-dir runs/quickstart --threads 2
#
# Variant flags (--random-token-prob, --mask-token-prob, --dropout, --lr) override the
# config to help pin down where a difference comes from.
import argparse
import json
import math
import os
import time
import tomllib

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import BertConfig, BertForMaskedLM

SPECIAL_NAMES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__ or "HF BertForMaskedLM reference for an autodidact MLM run")
    p.add_argument("--run-dir", required=True, help="autodidact run directory (config.toml, tokenizer.json, shards/)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps to train (default: train.max_steps; the LR schedule always uses max_steps)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=None, help="seed (default: run.seed)")
    p.add_argument("--mask-token-prob", type=float, default=None, help="override objective.mask_token_prob")
    p.add_argument("--random-token-prob", type=float, default=None, help="override objective.random_token_prob")
    p.add_argument("--dropout", type=float, default=None, help="override both dropout probabilities")
    p.add_argument("--lr", type=float, default=None, help="override train.lr")
    p.add_argument("--log-every", type=int, default=None, help="print the mean training loss every N steps (default: train.log_every)")
    p.add_argument("--json-out", default=None, help="write the eval table and throughput to this JSON file")
    return p.parse_args()


# ---------------------------------------------------------------------------- data


def load_stream(run_dir, split):
    """The concatenated token stream of one split (`train` or `heldout`) as int64."""
    index = json.load(open(os.path.join(run_dir, "shards", "index.json")))
    dtype = {"u16": "<u2", "u32": "<u4"}[index["dtype"]]
    parts = [np.fromfile(os.path.join(run_dir, "shards", s["file"]), dtype=dtype) for s in index[split]["shards"]]
    stream = np.concatenate(parts).astype(np.int64)
    assert len(stream) == index[split]["tokens"], f"{split}: {len(stream)} tokens on disk, index says {index[split]['tokens']}"
    return stream


def pack(stream, seq_len, cls_id):
    """[n, seq_len] sequences: [CLS] + seq_len-1 consecutive stream tokens; the tail is dropped."""
    body = seq_len - 1
    n = len(stream) // body
    seqs = np.empty((n, seq_len), dtype=np.int64)
    seqs[:, 0] = cls_id
    seqs[:, 1:] = stream[: n * body].reshape(n, body)
    return seqs


class Masker:
    """Dynamic BERT masking of a [batch, seq] id array (no padding: all tokens are real)."""

    def __init__(self, special_ids, vocab_size, mask_id, mask_ratio, mask_prob, random_prob):
        self.special = np.array(sorted(special_ids))
        self.non_special = np.setdiff1d(np.arange(vocab_size), self.special)  # random replacements
        self.mask_id, self.mask_ratio, self.mask_prob, self.random_prob = mask_id, mask_ratio, mask_prob, random_prob

    def __call__(self, ids, rng):
        """Returns (input_ids, flat masked positions, labels), all int64 numpy arrays."""
        ids = ids.copy()
        flat = ids.reshape(-1)
        candidates = np.flatnonzero(~np.isin(flat, self.special))
        chosen = candidates[rng.random(len(candidates)) < self.mask_ratio]
        if len(chosen) == 0:  # at least one target per batch
            chosen = candidates[rng.integers(len(candidates), size=1)]
        labels = flat[chosen].copy()
        r = rng.random(len(chosen))
        to_mask = r < self.mask_prob
        to_random = (r >= self.mask_prob) & (r < self.mask_prob + self.random_prob)
        flat[chosen[to_mask]] = self.mask_id
        flat[chosen[to_random]] = rng.choice(self.non_special, size=int(to_random.sum()))
        return ids, chosen, labels  # the rest (1 - mask_prob - random_prob) stays unchanged


# ---------------------------------------------------------------------------- model


def masked_logits(model, input_ids, positions):
    """Vocabulary logits at the flat masked positions only: [num_masked, vocab]."""
    hidden = model.bert(input_ids=input_ids).last_hidden_state  # [B, T, H]; no padding -> no attention mask
    picked = hidden.reshape(-1, hidden.shape[-1])[positions]  # [M, H]
    return model.cls(picked)  # transform (dense+GELU+LN) + tied decoder + bias


def param_groups(model, weight_decay):
    """AdamW groups: decay on weights, none on biases and LayerNorm parameters."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:  # tied decoder weight / bias appear twice
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, torch.nn.LayerNorm) or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step, t):
    """LR of 0-based optimizer step `step`: linear warm-up, then cosine/linear/constant to min_lr."""
    peak, min_lr, warmup, total = t["lr"], t["min_lr"], t["warmup_steps"], t["max_steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    coeff = {"cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1 - progress, "constant": 1.0}[t.get("decay", "cosine")]
    return min_lr + coeff * (peak - min_lr)


@torch.no_grad()
def evaluate(model, eval_set):
    """Target-weighted mean loss and accuracy over the fixed eval batches (dropout off)."""
    model.eval()
    loss_sum, correct, targets = 0.0, 0, 0
    for ids, pos, labels in eval_set:
        logits = masked_logits(model, ids, pos)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        targets += len(labels)
    model.train()
    return loss_sum / targets, correct / targets


def unigram_baseline(run_dir, eval_set, special_ids):
    """Unigram baselines on the eval targets, as the Rust summary.json computes them: accuracy
    of always predicting the most frequent non-special training token, and the cross-entropy
    of the add-one smoothed training unigram distribution. Calibrates how hard a given
    (randomly masked) eval target set is."""
    counts = np.array(json.load(open(os.path.join(run_dir, "shards", "index.json")))["train_counts"], dtype=np.float64)
    top = max((i for i in range(len(counts)) if i not in set(special_ids)), key=lambda i: counts[i])
    labels = torch.cat([b[2] for b in eval_set]).numpy()
    logp = np.log((counts + 1.0) / (counts.sum() + len(counts)))
    return float(-logp[labels].mean()), float((labels == top).mean())


def rust_evals(run_dir):
    """{step: (eval_loss, eval_accuracy)} from the Rust run's metrics.jsonl, if present."""
    out, path = {}, os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        for line in open(path):
            rec = json.loads(line)
            if "eval_loss" in rec:
                out[rec["step"]] = (rec["eval_loss"], rec["eval_accuracy"])
    return out


# ---------------------------------------------------------------------------- main


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = tomllib.load(open(os.path.join(args.run_dir, "config.toml"), "rb"))
    d, o, t = cfg["data"], cfg["objective"], dict(cfg["train"])
    # The run's full BertConfig (config.toml keeps only the keys the user set).
    m = json.load(open(os.path.join(args.run_dir, "model_config.json")))
    assert cfg["objective"]["type"] == "mlm" and t.get("grad_accum", 1) == 1, "only MLM with grad_accum = 1 is replicated"
    assert o.get("label_smoothing", 0.0) == 0.0, "label smoothing not replicated"
    if args.lr is not None:
        t["lr"] = args.lr
    seed = cfg["run"]["seed"] if args.seed is None else args.seed
    steps = t["max_steps"] if args.steps is None else args.steps
    log_every = t.get("log_every", 20) if args.log_every is None else args.log_every
    mask_prob = o["mask_token_prob"] if args.mask_token_prob is None else args.mask_token_prob
    random_prob = o["random_token_prob"] if args.random_token_prob is None else args.random_token_prob
    hidden_dropout = m["hidden_dropout_prob"] if args.dropout is None else args.dropout
    attn_dropout = m["attention_probs_dropout_prob"] if args.dropout is None else args.dropout
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    # Tokenizer: vocabulary size (with added tokens) and special ids.
    tok = Tokenizer.from_file(os.path.join(args.run_dir, "tokenizer.json"))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    special = {name: tok.token_to_id(name) for name in SPECIAL_NAMES}
    assert all(v is not None for v in special.values()), special
    seq_len, batch_size = d["seq_len"], t["batch_size"]

    train_seqs = pack(load_stream(args.run_dir, "train"), seq_len, special["[CLS]"])
    heldout_seqs = pack(load_stream(args.run_dir, "heldout"), seq_len, special["[CLS]"])
    masker = Masker(special.values(), vocab_size, special["[MASK]"], o["mask_ratio"], mask_prob, random_prob)

    # Fixed eval set: the first eval_batches batches in order (the last may be short),
    # masked once with a fixed seed.
    eval_rng = np.random.default_rng(seed + 1)
    eval_set = []
    for start in range(0, min(len(heldout_seqs), t["eval_batches"] * batch_size), batch_size):
        ids, pos, labels = masker(heldout_seqs[start : start + batch_size], eval_rng)
        eval_set.append((torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(labels)))
    eval_targets = sum(len(b[2]) for b in eval_set)
    base_loss, base_acc = unigram_baseline(args.run_dir, eval_set, special.values())

    # Model: HF BERT with the run's hyper-parameters, randomly initialized (no downloads).
    bert_cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=m["hidden_size"],
        num_hidden_layers=m["num_hidden_layers"],
        num_attention_heads=m["num_attention_heads"],
        intermediate_size=m["intermediate_size"],
        hidden_act="gelu",  # exact (erf) GELU, as the Rust model
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attn_dropout,
        max_position_embeddings=m["max_position_embeddings"],
        type_vocab_size=m["type_vocab_size"],
        initializer_range=m["initializer_range"],
        layer_norm_eps=m["layer_norm_eps"],
        pad_token_id=special["[PAD]"],
        tie_word_embeddings=True,
    )
    model = BertForMaskedLM(bert_cfg)
    model.train()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight, "decoder not tied"
    n_params = sum(p.numel() for p in model.parameters())

    opt = torch.optim.AdamW(param_groups(model, t["weight_decay"]), lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"])
    clip = t.get("clip_grad_norm")

    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, params {n_params}, vocab {vocab_size}")
    print(f"# train sequences {len(train_seqs)}, held-out sequences {len(heldout_seqs)}, eval batches {len(eval_set)} ({eval_targets} targets)")
    print(f"# steps {steps}, batch {batch_size}x{seq_len}, lr {t['lr']} -> {t['min_lr']}, warmup {t['warmup_steps']}, "
          f"mask/random {mask_prob}/{random_prob}, dropout {hidden_dropout}/{attn_dropout}, seed {seed}", flush=True)

    evals = {0: evaluate(model, eval_set)}
    print(f"eval step {0:>5}  loss {evals[0][0]:.4f}  acc {evals[0][1]:.4f}", flush=True)

    order, train_time, wall_start, window = None, 0.0, time.perf_counter(), []
    n_seq = len(train_seqs)
    for step in range(steps):
        t0 = time.perf_counter()
        # Batch `step`: samples step*B .. step*B+B-1 of the epoch-wise shuffle.
        ids = np.empty((batch_size, seq_len), dtype=np.int64)
        for j in range(batch_size):
            k = step * batch_size + j
            if k % n_seq == 0 or order is None:  # new epoch (or first batch): fresh permutation
                order = rng.permutation(n_seq)
            ids[j] = train_seqs[order[k % n_seq]]
        ids, pos, labels = masker(ids, rng)
        ids, pos, labels = torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(labels)

        for g in opt.param_groups:
            g["lr"] = lr_at(step, t)
        loss = F.cross_entropy(masked_logits(model, ids, pos), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        train_time += time.perf_counter() - t0
        window.append(loss.item())

        done = step + 1
        if done % log_every == 0:
            tps = done * batch_size * seq_len / train_time
            print(f"train step {done:>5}  loss {np.mean(window):.4f}  lr {lr_at(step, t):.3e}  {tps:.0f} tok/s (cumulative, training only)", flush=True)
            window = []
        if done % t["eval_every"] == 0 or done == steps:
            evals[done] = evaluate(model, eval_set)
            print(f"eval step {done:>5}  loss {evals[done][0]:.4f}  acc {evals[done][1]:.4f}", flush=True)

    wall = time.perf_counter() - wall_start
    tokens = steps * batch_size * seq_len
    train_tps, wall_tps = (tokens / train_time if train_time else 0.0), tokens / wall

    rust = rust_evals(args.run_dir)
    print()
    print(f"{'step':>6} | {'torch loss':>10} {'torch acc':>9} | {'rust loss':>9} {'rust acc':>8}")
    for s, (loss_v, acc_v) in sorted(evals.items()):
        r = rust.get(s)
        rs = f"{r[0]:>9.4f} {r[1]:>8.4f}" if r else f"{'-':>9} {'-':>8}"
        print(f"{s:>6} | {loss_v:>10.4f} {acc_v:>9.4f} | {rs}")
    summary_path = os.path.join(args.run_dir, "summary.json")
    rust_base = json.load(open(summary_path)).get("unigram_baseline", {}) if os.path.exists(summary_path) else {}
    print(f"{'unigr.':>6} | {base_loss:>10.4f} {base_acc:>9.4f} | {rust_base.get('eval_loss', float('nan')):>9.4f} {rust_base.get('eval_accuracy', float('nan')):>8.4f}"
          "   (unigram baseline on each side's own eval targets)")
    print(f"\ntraining tokens/s: {train_tps:.0f} (training steps only), {wall_tps:.0f} (wall, incl. eval); "
          f"{tokens} tokens in {wall:.1f} s, {args.threads} threads")

    if args.json_out:
        json.dump({
            "steps": steps, "threads": args.threads, "seed": seed, "mask_token_prob": mask_prob, "random_token_prob": random_prob,
            "dropout": [hidden_dropout, attn_dropout], "lr": t["lr"], "num_params": n_params,
            "eval_targets": eval_targets, "unigram_baseline": {"eval_loss": base_loss, "eval_accuracy": base_acc},
            "evals": {str(s): {"eval_loss": l, "eval_accuracy": a} for s, (l, a) in sorted(evals.items())},
            "train_tokens_per_s": train_tps, "wall_tokens_per_s": wall_tps, "wall_s": wall,
        }, open(args.json_out, "w"), indent=2)


if __name__ == "__main__":
    main()
