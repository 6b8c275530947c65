#!/usr/bin/env python3
"""PyTorch half of the side-by-side CPU training-step benchmark (autodidact vs PyTorch).

Runs ONE workload in this process and prints exactly one JSON line on stdout:

  {"impl": "pytorch", "version": <torch version>, "workload": W, "threads": T,
   "step_seconds": [S floats, warm-up excluded], "items_per_step": N,
   "unit": "tokens" | "images", "params": <trainable parameters>,
   "peak_rss_mb": <ru_maxrss / 1024>}

(diagnostics, such as the losses, go to stderr). One step = forward + loss + backward +
optimizer.step() + zero_grad, timed with time.perf_counter(), on synthetic inputs generated
up front (4 batches from a seeded generator, cycled; generation is not timed). AdamW
(lr 1e-4, eps 1e-8, weight decay 0.01 on matrices only, as autodidact-train's
build_optimizer and benches/workloads.rs). torch.set_num_threads(T) and
torch.set_num_interop_threads(1) are set first.

Workloads, each mirroring the Rust model of the same shape:

  mlm-small      BERT (crates/autodidact-models/src/bert.rs) vocab 8192, hidden 128, 2 layers,
                 4 heads, FFN 512, batch 32 x seq 128, dropout 0.1, layer_norm_eps 1e-12;
                 MLM head (BertLMPredictionHead, decoder tied to the word embeddings) on the
                 gathered masked positions only (crates/autodidact-objectives/src/mlm.rs)
  mlm-base       the same with hidden 256, 4 layers, 4 heads, FFN 1024
  simclr-resnet  ResNet-18 layout, width 16, CIFAR stem (resnet.rs) + projection head
                 Linear(128,128)-BN-ReLU-Linear(128,128) (heads.rs; hidden defaults to the
                 feature width), NT-Xent tau 0.5 over 2x256 views of 3x32x32
  mae-vit        MAE (vit.rs, mae.rs): 32x32x3, patch 4, encoder 192 / depth 4 / 3 heads,
                 decoder 96 / depth 2 / 3 heads, mlp_ratio 4, fixed 2-D sin-cos positions,
                 pre-LN blocks without dropout, 75% masking, norm-pix MSE on masked patches

Attention is computed eagerly (matmul -> softmax -> dropout -> matmul, as HF's
attn_implementation="eager" and as the Rust code does); --sdpa switches the transformer
workloads to F.scaled_dot_product_attention (fused kernel) instead.

Setup and run:
  python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy
  .venv-torch/bin/python scripts/bench/torch_bench.py --workload mlm-small --threads 1 --steps 10 --warmup 2
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The ResNet, projection head and NT-Xent of the SimCLR reference script (module-level
# definitions only; its main() is behind `if __name__ == "__main__"`).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from simclr_torch import ResNet, nt_xent, projection_head  # noqa: E402

WORKLOADS = ["mlm-small", "mlm-base", "simclr-resnet", "mae-vit"]
MASK_ID = 4  # [MASK] in autodidact's special-token layout ([PAD] [UNK] [CLS] [SEP] [MASK])
FIRST_ORDINARY_ID = 5


def parse_args():
    p = argparse.ArgumentParser(description="PyTorch training-step benchmark (see the module docstring)")
    p.add_argument("--workload", required=True, choices=WORKLOADS + ["gemm-peak"])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sdpa", action="store_true", help="F.scaled_dot_product_attention instead of eager attention")
    p.add_argument("--count-flops", action="store_true",
                   help="after timing, count one step's FLOPs (forward + backward) with torch.utils.flop_counter")
    return p.parse_args()


def attention(q, k, v, mask_bias, dropout_p, sdpa):
    """Multi-head scaled dot-product attention; q, k, v: (B, nh, T, hd) -> (B, nh, T, hd).

    Eager: scores = q k^T / sqrt(hd) (+ additive mask), softmax, dropout on the
    probabilities, times v -- the Rust path (bert.rs BertSelfAttention, burn's
    MultiHeadAttention). sdpa: the same maths in PyTorch's fused kernel.
    """
    if sdpa:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias, dropout_p=dropout_p)
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))
    if mask_bias is not None:
        scores = scores + mask_bias
    probs = F.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p, training=True)
    return probs @ v


# ------------------------------------------------------------------------------------ BERT

class BertLayer(nn.Module):
    """HF BertLayer, post-LayerNorm: x = LN(x + drop(W_o attn(x))); x = LN(x + drop(W_2 gelu(W_1 x)))."""

    def __init__(self, h, heads, ffn, dropout, eps, sdpa):
        super().__init__()
        self.heads, self.dropout, self.sdpa = heads, dropout, sdpa
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=eps)
        self.intermediate = nn.Linear(h, ffn)
        self.output = nn.Linear(ffn, h)
        self.out_norm = nn.LayerNorm(h, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask_bias):
        b, t, h = x.shape
        nh = self.heads

        def split(y):
            return y.view(b, t, nh, h // nh).transpose(1, 2)  # (B, nh, T, hd)

        ctx = attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), mask_bias,
                        self.dropout if self.training else 0.0, self.sdpa)
        ctx = ctx.transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(self.drop(self.attn_out(ctx)) + x)
        return self.out_norm(self.drop(self.output(F.gelu(self.intermediate(x)))) + x)  # F.gelu: erf form


class BertForMaskedLM(nn.Module):
    """bert.rs BertForMaskedLM: embeddings (word + position + token type, LN, dropout), post-LN
    layers, and the HF BertLMPredictionHead (dense, GELU, LN, decoder tied to the word
    embeddings plus its own bias) applied to the masked rows only (forward_masked)."""

    def __init__(self, vocab, h, layers, heads, ffn, max_pos=128, type_vocab=2, dropout=0.1, eps=1e-12, sdpa=False):
        super().__init__()
        self.word = nn.Embedding(vocab, h)
        self.position = nn.Embedding(max_pos, h)
        self.token_type = nn.Embedding(type_vocab, h)
        self.emb_norm = nn.LayerNorm(h, eps=eps)
        self.emb_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList([BertLayer(h, heads, ffn, dropout, eps, sdpa) for _ in range(layers)])
        self.head_dense = nn.Linear(h, h)
        self.head_norm = nn.LayerNorm(h, eps=eps)
        self.head_bias = nn.Parameter(torch.zeros(vocab))
        for m in self.modules():  # HF init (does not matter for timing, keeps the loss sane)
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_masked(self, input_ids, token_type_ids, mask_bias, masked_positions):
        b, t = input_ids.shape
        pos = torch.arange(t).unsqueeze(0)
        x = self.emb_drop(self.emb_norm(self.word(input_ids) + self.position(pos) + self.token_type(token_type_ids)))
        for layer in self.layers:
            x = layer(x, mask_bias)
        rows = x.reshape(b * t, -1).index_select(0, masked_positions)  # (M, H)
        y = self.head_norm(F.gelu(self.head_dense(rows)))
        return y @ self.word.weight.t() + self.head_bias  # (M, V)


def mlm_batches(gen, n, rows, seq, vocab, mask_ratio=0.15):
    """`n` synthetic MLM batches as benches/workloads.rs mlm_batches: ids ~ U[5, vocab), each
    of the rows*seq positions masked (-> [MASK]) with probability 15% independently (about
    614 of 4096), fresh per batch; no padding."""
    out = []
    total = rows * seq
    for _ in range(n):
        ids = torch.randint(FIRST_ORDINARY_ID, vocab, (rows, seq), generator=gen)
        positions = (torch.rand(total, generator=gen) < mask_ratio).nonzero().view(-1)  # ascending
        labels = ids.view(-1)[positions].clone()
        inputs = ids.clone()
        inputs.view(-1)[positions] = MASK_ID
        attention_mask = torch.ones(rows, seq, dtype=torch.bool)
        # Additive padding mask (B, 1, 1, T), 0 for real tokens. As in the Rust code
        # (BertInput::from_host), no mask is built when every position is real -- here always.
        mask_bias = None if bool(attention_mask.all()) else \
            torch.zeros(rows, seq).masked_fill(~attention_mask, -1e9).view(rows, 1, 1, seq)
        out.append(dict(input_ids=inputs, token_type_ids=torch.zeros(rows, seq, dtype=torch.long),
                        mask_bias=mask_bias, masked_positions=positions, labels=labels))
    return out


def build_mlm(args, gen, hidden, layers, heads, ffn):
    vocab, rows, seq = 8192, 32, 128
    model = BertForMaskedLM(vocab, hidden, layers, heads, ffn, max_pos=seq, sdpa=args.sdpa)
    batches = mlm_batches(gen, 4, rows, seq, vocab)

    def loss_fn(bt):
        logits = model.forward_masked(bt["input_ids"], bt["token_type_ids"], bt["mask_bias"], bt["masked_positions"])
        return F.cross_entropy(logits, bt["labels"])  # mean over the masked positions

    return model, batches, loss_fn, rows * seq, "tokens"


# ------------------------------------------------------------------------------------ SimCLR

class SimClr(nn.Module):
    def __init__(self, in_ch=3, width=16, blocks=(2, 2, 2, 2), out_dim=128):
        super().__init__()
        self.encoder = ResNet(in_ch, width, list(blocks))
        dim = self.encoder.feature_dim
        self.projection = projection_head(dim, dim, out_dim)  # hidden = feature width, as vision.rs


def build_simclr(args, gen):
    n, tau = 256, 0.5
    model = SimClr()
    # Both views of a batch in one (2N, 3, 32, 32) tensor, rows [0, N) view 1 and [N, 2N)
    # view 2, as the Rust objective forwards them (BatchNorm statistics over both views).
    # Pixels uniform in [-1, 1) as benches/workloads.rs image_batches (augmentation not timed).
    batches = [torch.rand(2 * n, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(4)]

    def loss_fn(x):
        z1, z2 = model.projection(model.encoder(x)).chunk(2)
        return nt_xent(z1, z2, tau)

    return model, batches, loss_fn, n, "images"


# ------------------------------------------------------------------------------------ MAE

def sincos_2d(dim, grid):
    """vit.rs sincos_2d / MAE get_2d_sincos_pos_embed(cls_token=True): (1 + grid^2, dim)."""
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows = [torch.zeros(dim, dtype=torch.float64)]
    for r in range(grid):
        for c in range(grid):
            parts = []
            for pos in (c, r):  # column first, then row
                parts += [torch.sin(pos * omega), torch.cos(pos * omega)]
            rows.append(torch.cat(parts))
    return torch.stack(rows).float()


class PreNormBlock(nn.Module):
    """burn TransformerEncoderLayer with norm_first, dropout 0 (vit.rs blocks()):
    x = x + W_o attn(norm_2(x)); x = x + W_2 gelu(W_1 norm_1(x)); all Linear with bias."""

    def __init__(self, dim, heads, mlp_ratio, sdpa, eps=1e-6):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.norm_2 = nn.LayerNorm(dim, eps=eps)  # before attention (burn's naming)
        self.query, self.key, self.value, self.output = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_1 = nn.LayerNorm(dim, eps=eps)  # before the MLP
        self.linear_inner = nn.Linear(dim, dim * mlp_ratio)
        self.linear_outer = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x):
        b, t, d = x.shape
        nh = self.heads
        y = self.norm_2(x)

        def split(z):
            return z.view(b, t, nh, d // nh).transpose(1, 2)

        ctx = attention(split(self.query(y)), split(self.key(y)), split(self.value(y)), None, 0.0, self.sdpa)
        x = x + self.output(ctx.transpose(1, 2).reshape(b, t, d))
        return x + self.linear_outer(F.gelu(self.linear_inner(self.norm_1(x))))


def patchify(images, p):
    """vit.rs patchify: (B, C, H, W) -> (B, (H/p)(W/p), p*p*C) in MAE's nhwpqc order."""
    b, c, h, w = images.shape
    gh, gw = h // p, w // p
    return images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, p * p * c)


def gather_rows(x, index):
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Mae(nn.Module):
    """mae.rs Mae: ViT encoder on the visible patches (+ class token), decoder with mask
    tokens, unshuffle, fixed sin-cos positions, prediction of every patch's pixels."""

    def __init__(self, image=32, patch=4, in_ch=3, dim=192, depth=4, heads=3, mlp_ratio=4,
                 dec_dim=96, dec_depth=2, dec_heads=3, sdpa=False):
        super().__init__()
        self.patch = patch
        grid = image // patch
        patch_dim = patch * patch * in_ch
        # encoder (vit.rs Vit)
        self.patch_embed = nn.Linear(patch_dim, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList([PreNormBlock(dim, heads, mlp_ratio, sdpa) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.register_buffer("pos_embed", sincos_2d(dim, grid).unsqueeze(0), persistent=False)  # fixed
        # decoder
        self.decoder_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dec_dim) * 0.02)
        self.decoder_blocks = nn.ModuleList([PreNormBlock(dec_dim, dec_heads, mlp_ratio, sdpa) for _ in range(dec_depth)])
        self.decoder_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dec_dim, patch_dim)
        self.register_buffer("decoder_pos", sincos_2d(dec_dim, grid).unsqueeze(0), persistent=False)

    def forward(self, images, keep, restore):
        tokens = self.patch_embed(patchify(images, self.patch)) + self.pos_embed[:, 1:]  # (B, L, D)
        b, l, d = tokens.shape
        x = torch.cat([self.cls_token.expand(b, 1, d), gather_rows(tokens, keep)], 1)  # cls position embedding is 0
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))  # (B, 1 + visible, d)
        n, dd = x.shape[1], x.shape[2]
        masked = self.mask_token.expand(b, l + 1 - n, dd)
        unshuffled = gather_rows(torch.cat([x[:, 1:], masked], 1), restore)  # (B, L, d)
        x = torch.cat([x[:, :1], unshuffled], 1) + self.decoder_pos
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x)[:, 1:])  # (B, L, patch_dim), all patches


def random_masking(b, l, ratio):
    """mae.rs PatchMask::random: argsort of uniform noise; keep round(L(1 - ratio))."""
    visible = min(max(round(l * (1 - ratio)), 1), l)
    shuffle = torch.rand(b, l).argsort(1)
    restore = shuffle.argsort(1)
    keep = shuffle[:, :visible]
    mask = torch.ones(b, l)
    mask[:, :visible] = 0
    return keep, restore, mask.gather(1, restore)


def mae_loss(pred, target, mask):
    """losses.rs mae_loss with norm_pix: per-patch (unbiased) normalised targets, MSE per
    patch, mean over the masked patches."""
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, keepdim=True, unbiased=True)
    target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def build_mae(args, gen):
    n = 256
    model = Mae(sdpa=args.sdpa)
    batches = [torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(4)]

    def loss_fn(images):
        # The mask is drawn inside the step, as the Rust objective draws it in forward().
        keep, restore, mask = random_masking(n, 64, 0.75)
        pred = model(images, keep, restore)
        return mae_loss(pred, patchify(images, model.patch), mask)

    return model, batches, loss_fn, n, "images"


# ------------------------------------------------------------------------------------ main

def gemm_peak(threads, n=2048, reps=10):
    """Best fp32 GEMM rate of this machine at `threads` threads (GFLOP/s): torch.mm (MKL) on
    n x n matrices, best of `reps` after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main():
    args = parse_args()
    if args.workload == "gemm-peak":
        torch.set_num_threads(args.threads)
        print(json.dumps({"impl": "pytorch", "version": torch.__version__, "workload": "gemm-peak",
                          "threads": args.threads, "gflops": gemm_peak(args.threads)}), flush=True)
        return
    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch's own libraries
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    if args.workload == "mlm-small":
        built = build_mlm(args, gen, 128, 2, 4, 512)
    elif args.workload == "mlm-base":
        built = build_mlm(args, gen, 256, 4, 4, 1024)
    elif args.workload == "simclr-resnet":
        built = build_simclr(args, gen)
    else:
        built = build_mae(args, gen)
    model, batches, loss_fn, items, unit = built
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # As autodidact-train build_optimizer (benches/workloads.rs settings): AdamW betas
    # 0.9/0.999, eps 1e-8, weight decay 0.01 on matrices only -- no decay on biases and
    # LayerNorm/BatchNorm weights, which are exactly the 1-D parameters here (the Rust rule is
    # by name: bias|gamma|beta). lr 1e-4 as the Rust bench (the value does not affect timing).
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), eps=1e-8)

    times, losses = [], []
    for s in range(args.warmup + args.steps):
        bt = batches[s % len(batches)]
        t0 = time.perf_counter()
        loss = loss_fn(bt)
        losses.append(loss.item())  # the Rust bench reads the loss back each step as well
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if s >= args.warmup:
            times.append(dt)

    flops = None
    if args.count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            loss_fn(batches[0]).backward()
        opt.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()

    attn = "" if args.workload == "simclr-resnet" else f"{'sdpa' if args.sdpa else 'eager'} attention, "
    print(f"# {args.workload}: torch {torch.__version__}, threads {torch.get_num_threads()}, {attn}"
          f"peak RSS after `import torch` {rss_after_import:.0f} MB, losses {[round(v, 4) for v in losses]}", file=sys.stderr)
    print(json.dumps({
        "impl": "pytorch",
        "version": torch.__version__,
        "workload": args.workload,
        "threads": args.threads,
        "step_seconds": times,
        "items_per_step": items,
        "unit": unit,
        "params": sum(p.numel() for p in params),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "flops_per_step": flops,
    }), flush=True)


if __name__ == "__main__":
    main()
