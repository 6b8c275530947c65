"""PyTorch reference for autodidact's SimCLR pretraining on Fashion-MNIST (or MNIST).

Trains SimCLR (Chen et al. 2020) with the recipe autodidact runs, then evaluates the frozen
encoder with a kNN classifier and a linear probe, and prints one JSON line with the figures.

  * data: the IDX .gz files of scripts/fetch-data.sh (data/fashion-mnist by default), read
    with numpy; pixels /255, then Normalize(mean, std) with the mean/std of all 60000
    training images (population std), printed at start;
  * encoder: ResNet-18 layout with a small-image stem (as crates/autodidact-models resnet.rs):
    conv3x3(1->w, stride 1, pad 1, no bias)-BN-ReLU, no max-pool; stages of BasicBlocks
    (--blocks, default 2,2,2,2) with widths w, 2w, 4w, 8w and strides 1, 2, 2, 2; BasicBlock
    = conv3x3(stride s)-BN-ReLU-conv3x3-BN + shortcut (1x1 conv stride s + BN when the shape
    changes), ReLU after the add; global average pool -> 8w features. Init as torchvision's
    ResNet: Kaiming-normal fan-out (ReLU gain) convolutions, BN weight 1 / bias 0;
  * projection head (lightly's SimCLRProjectionHead): Linear(8w, hidden) -> BatchNorm1d ->
    ReLU -> Linear(hidden, 128), Linear layers with bias and PyTorch's default init;
  * loss: NT-Xent (scripts/golden/nt_xent.py), temperature --temperature (default 0.5); the two views of a batch go
    through the network as one batch of 2N (BatchNorm statistics over both views, as the
    SimCLR code), or one view at a time with --separate-views (as lightly's examples);
  * augmentation, per view, per image, on float tensors (torchvision's tensor semantics;
    torchvision is not needed, so implemented here, vectorised over the batch):
      RandomResizedCrop(28, scale=(0.08, 1), ratio=(3/4, 4/3)): torchvision's get_params (10
        attempts of area ~ U(scale) * 784, log-aspect ~ U(log ratio), w = round(sqrt(area *
        aspect)), h = round(sqrt(area / aspect)), accepted if 0 < w,h <= 28, top-left
        i ~ U{0..28-h}, j ~ U{0..28-w}; else the whole image), bilinear resize of the crop to
        28x28 with align_corners=False; crops are never larger than 28, so this equals
        torchvision's antialiased resize: src = clamp((dst + 0.5) * size / 28 - 0.5, 0, size-1);
      RandomHorizontalFlip(0.5);
      RandomApply([ColorJitter(brightness=0.4, contrast=0.4)], p=0.8): factors b, c ~
        U(0.6, 1.4), applied in random order (each order with prob 1/2): brightness
        x -> clamp(b x, 0, 1), contrast x -> clamp(c x + (1 - c) mean(x), 0, 1) with mean(x)
        the mean of the (single-channel) image at that point;
      RandomSolarize(0.5, p=--solarize) (default 0, off; autodidact's augment.solarize):
        x -> 1 - x where x >= 0.5;
      then Normalize(mean, std);
  * optimiser: AdamW (lr 1e-3, weight decay 1e-6 on every parameter, betas 0.9/0.999, eps
    1e-6, global-norm clipping at 1.0 as autodidact's defaults), one
    step per batch of 256 images (last incomplete batch of an epoch dropped, fresh permutation
    every epoch); learning rate per step as autodidact-train's LrSchedule: lr*(step+1)/warmup
    for step < warmup, then cosine to --min-lr at the last step;
  * evaluation on frozen encoder features (encoder in eval mode: BatchNorm running stats; no
    augmentation, only Normalize), train = the (first --max-train) training images with
    labels, test = the 10000 test images:
      kNN (Wu et al. 2018): cosine similarity to the L2-normalised train features, k = 20
        nearest, each votes for its label with weight exp(sim / 0.07), argmax of the votes;
      linear probe: multinomial logistic regression on features standardised with the train
        mean / population std ((x - mean) / max(std, 1e-6), as autodidact-train's
        Standardizer), loss = mean cross-entropy +
        l2/2 * ||W||^2 (bias not penalised, l2 = 1e-4), trained full batch from zero weights
        with Adam for 500 steps, lr 0.05 cosine-decayed to 0 (autodidact's protocol,
        crates/autodidact-train/src/probe.rs); --probe-optimizer lbfgs uses torch.optim.LBFGS
        (lr 1, max_iter 100, history 10, strong-Wolfe) instead, to check convergence;
  * baselines (no training): --baseline pixels (the 784 normalised pixels as features),
    --baseline random (the randomly initialised encoder).

Random streams are PyTorch ones, so the numbers are statistically, not bit-for-bit,
comparable with the Rust run.

Setup and run (CPU):
  scripts/fetch-data.sh fashion-mnist
  python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch numpy
  # the recipe of configs/simclr-fashion-mnist.toml:
  /tmp/venv-torch/bin/python scripts/reference/simclr_torch.py --epochs 2 --width 16 --lr 2e-3 --warmup-steps 46 \
      --hidden 2048 --temperature 0.2 --solarize 0.2
  /tmp/venv-torch/bin/python scripts/reference/simclr_torch.py --baseline pixels
  # quick check: --max-train 512 --epochs 1 --width 8
"""
import argparse
import gzip
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SIZE = 28


def parse_args():
    p = argparse.ArgumentParser(description="PyTorch SimCLR reference on Fashion-MNIST (see the module docstring)")
    p.add_argument("--data-dir", default="data/fashion-mnist", help="directory with the four IDX .gz files")
    p.add_argument("--baseline", choices=["pixels", "random"], default=None, help="evaluate a baseline instead of training")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=64, help="ResNet width w (stage widths w, 2w, 4w, 8w)")
    p.add_argument("--blocks", default="2,2,2,2", help="BasicBlocks per stage")
    p.add_argument("--hidden", type=int, default=None, help="projection hidden width (default: feature dim 8w)")
    p.add_argument("--out-dim", type=int, default=128, help="projection output width")
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--solarize", type=float, default=0.0, help="probability of solarizing a view (augment.solarize)")
    p.add_argument("--separate-views", action="store_true", help="forward the two views separately (BatchNorm per view)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--adam-eps", type=float, default=1e-6, help="AdamW epsilon (autodidact's default 1e-6)")
    p.add_argument("--clip-grad-norm", type=float, default=1.0, help="global gradient-norm clip, 0 = off (autodidact's default 1.0)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: one epoch)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training images (training and eval)")
    p.add_argument("--max-test", type=int, default=None, help="use only the first N test images")
    p.add_argument("--knn-k", type=int, default=20)
    p.add_argument("--knn-t", type=float, default=0.07)
    p.add_argument("--probe-l2", type=float, default=1e-4)
    p.add_argument("--probe-iters", type=int, default=100, help="L-BFGS iterations")
    p.add_argument("--probe-optimizer", choices=["adam", "lbfgs"], default="adam",
                   help="adam: autodidact's protocol (500 full-batch steps, lr 0.05 cosine); lbfgs: to check convergence")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20, help="print the mean loss every N steps")
    p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    return p.parse_args()


# ---------------------------------------------------------------- data

def read_idx(path):
    with gzip.open(path) as f:
        magic = struct.unpack(">I", f.read(4))[0]
        ndim = magic & 0xFF
        assert magic >> 8 == 0x08, f"{path}: not an unsigned-byte IDX file"
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def load_split(data_dir, split):
    x = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------- augmentation

def random_resized_crop(x, gen, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10):
    """torchvision RandomResizedCrop(SIZE) on a batch [B, C, SIZE, SIZE], one crop per image."""
    b = x.shape[0]
    area = SIZE * SIZE
    target = area * torch.empty(b, attempts).uniform_(scale[0], scale[1], generator=gen)
    log_r = torch.empty(b, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= SIZE) & (h > 0) & (h <= SIZE)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    idx = first.clamp_min(0).unsqueeze(1)
    w = torch.where(first >= 0, w.gather(1, idx).squeeze(1), torch.full((b,), float(SIZE)))
    h = torch.where(first >= 0, h.gather(1, idx).squeeze(1), torch.full((b,), float(SIZE)))
    # top-left corner uniform over the valid positions (torch.randint(0, SIZE - h + 1) in torchvision)
    i = torch.floor(torch.rand(b, generator=gen) * (SIZE - h + 1)).clamp_max(SIZE - h)
    j = torch.floor(torch.rand(b, generator=gen) * (SIZE - w + 1)).clamp_max(SIZE - w)
    # bilinear, align_corners=False, resize of the crop; source coordinates clamped inside the crop
    d = torch.arange(SIZE, dtype=torch.float32) + 0.5
    sy = i[:, None] + ((d[None] * h[:, None] / SIZE) - 0.5).clamp(min=torch.zeros(1), max=(h[:, None] - 1))
    sx = j[:, None] + ((d[None] * w[:, None] / SIZE) - 0.5).clamp(min=torch.zeros(1), max=(w[:, None] - 1))
    gy = (2 * sy + 1) / SIZE - 1  # grid_sample, align_corners=False: pixel p <-> (2p + 1) / SIZE - 1
    gx = (2 * sx + 1) / SIZE - 1
    grid = torch.stack([gx[:, None, :].expand(b, SIZE, SIZE), gy[:, :, None].expand(b, SIZE, SIZE)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False), (i, j, h, w)


def augment(x, gen, mean, std, solarize=0.0):
    """One SimCLR view of a batch of [0, 1] images [B, 1, 28, 28] -> normalised view."""
    b = x.shape[0]
    x, _ = random_resized_crop(x, gen)
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    apply = (torch.rand(b, generator=gen) < 0.8)[:, None, None, None]
    bf = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    cf = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    brightness_first = (torch.rand(b, generator=gen) < 0.5)[:, None, None, None]

    def bright(t):
        return (bf * t).clamp(0, 1)

    def contrast(t):
        return (cf * t + (1 - cf) * t.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)

    jittered = torch.where(brightness_first, contrast(bright(x)), bright(contrast(x)))
    x = torch.where(apply, jittered, x)
    if solarize > 0:
        sol = (torch.rand(b, generator=gen) < solarize)[:, None, None, None]
        x = torch.where(sol & (x >= 0.5), 1 - x, x)
    return (x - mean) / std


# ---------------------------------------------------------------- model

def conv_bn(cin, cout, k, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1)
        self.downsample = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(F.relu(self.conv1(x))) + s)


class ResNet(nn.Module):
    def __init__(self, in_ch, width, blocks):
        super().__init__()
        self.stem = conv_bn(in_ch, width, 3, 1)
        layers, c = [], width
        for s, n in enumerate(blocks):
            out = width << s
            for b in range(n):
                layers.append(BasicBlock(c, out, (1 if s == 0 else 2) if b == 0 else 1))
                c = out
        self.blocks = nn.Sequential(*layers)
        self.feature_dim = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.blocks(F.relu(self.stem(x))).mean(dim=(2, 3))


def projection_head(dim, hidden, out):
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


def nt_xent(z1, z2, tau):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / tau).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def lr_at(step, peak, min_lr, warmup, total):
    """autodidact-train LrSchedule with cosine decay."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - min_lr)


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def encode(encoder, x, mean, std, batch=512):
    encoder.eval()
    return torch.cat([encoder((x[s:s + batch] - mean) / std) for s in range(0, len(x), batch)])


@torch.no_grad()
def knn_accuracy(train_f, train_y, test_f, test_y, k, t, classes=10, chunk=1000):
    train_f = F.normalize(train_f, dim=1)
    test_f = F.normalize(test_f, dim=1)
    k = min(k, len(train_f))
    correct = 0
    for s in range(0, len(test_f), chunk):
        sim, idx = (test_f[s:s + chunk] @ train_f.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), classes).scatter_add_(1, train_y[idx], torch.exp(sim / t))
        correct += (votes.argmax(1) == test_y[s:s + chunk]).sum().item()
    return correct / len(test_f)


def linear_probe(train_f, train_y, test_f, test_y, l2, iters, classes=10, optimizer="adam", adam_steps=500, adam_lr=0.05):
    mu = train_f.mean(0)
    sd = train_f.std(0, unbiased=False).clamp_min(1e-6)
    xtr, xte = (train_f - mu) / sd, (test_f - mu) / sd
    w = torch.zeros(xtr.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)

    def objective():
        return F.cross_entropy(xtr @ w + b, train_y) + 0.5 * l2 * (w * w).sum()

    if optimizer == "adam":
        # autodidact's protocol (crates/autodidact-train/src/probe.rs): full-batch Adam,
        # cosine-decayed learning rate, same objective.
        opt = torch.optim.Adam([w, b], lr=adam_lr)
        for step in range(adam_steps):
            for g in opt.param_groups:
                g["lr"] = adam_lr * 0.5 * (1 + math.cos(math.pi * step / adam_steps))
            opt.zero_grad()
            objective().backward()
            opt.step()
    else:
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, history_size=10, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        train_acc = ((xtr @ w + b).argmax(1) == train_y).float().mean().item()
        test_acc = ((xte @ w + b).argmax(1) == test_y).float().mean().item()
    return test_acc, train_acc


# ---------------------------------------------------------------- main

def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.time()

    x_train, y_train = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    mean, std = x_train.mean().item(), x_train.std(unbiased=False).item()
    if args.max_train:
        x_train, y_train = x_train[:args.max_train], y_train[:args.max_train]
    if args.max_test:
        x_test, y_test = x_test[:args.max_test], y_test[:args.max_test]
    blocks = [int(v) for v in args.blocks.split(",")]
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, data {args.data_dir}: "
          f"train {len(x_train)}, test {len(x_test)}, pixel mean {mean:.6f} std {std:.6f}", flush=True)

    result = {"method": args.baseline or "simclr", "data_dir": args.data_dir, "n_train": len(x_train),
              "n_test": len(x_test), "pixel_mean": mean, "pixel_std": std, "seed": args.seed,
              "threads": torch.get_num_threads(), "torch": torch.__version__}

    encoder = ResNet(1, args.width, blocks)
    if args.baseline != "pixels":
        result.update(width=args.width, blocks=blocks, feature_dim=encoder.feature_dim,
                      encoder_params=sum(p.numel() for p in encoder.parameters()))

    if args.baseline is None:
        hidden = args.hidden or encoder.feature_dim
        head = projection_head(encoder.feature_dim, hidden, args.out_dim)
        params = list(encoder.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, eps=args.adam_eps)
        batch = min(args.batch_size, len(x_train))
        steps_per_epoch = len(x_train) // batch
        total = steps_per_epoch * args.epochs
        warmup = steps_per_epoch if args.warmup_steps is None else args.warmup_steps
        print(f"# simclr: width {args.width}, blocks {blocks}, head {encoder.feature_dim}->{hidden}->{args.out_dim}, "
              f"params {sum(p.numel() for p in params)}, batch {batch}, {steps_per_epoch} steps/epoch x {args.epochs} epochs, "
              f"lr {args.lr} -> {args.min_lr}, warmup {warmup}, wd {args.weight_decay}, tau {args.temperature}, "
              f"solarize {args.solarize}", flush=True)
        encoder.train()
        head.train()
        step, window, epoch_losses = 0, [], []
        t0 = time.time()
        for epoch in range(args.epochs):
            perm = torch.randperm(len(x_train), generator=gen)
            losses = []
            for s in range(steps_per_epoch):
                xb = x_train[perm[s * batch:(s + 1) * batch]]
                v1, v2 = augment(xb, gen, mean, std, args.solarize), augment(xb, gen, mean, std, args.solarize)
                if args.separate_views:
                    z1, z2 = head(encoder(v1)), head(encoder(v2))
                else:
                    z1, z2 = head(encoder(torch.cat([v1, v2]))).chunk(2)
                loss = nt_xent(z1, z2, args.temperature)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, args.lr, args.min_lr, warmup, total)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if args.clip_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, args.clip_grad_norm)
                opt.step()
                step += 1
                losses.append(loss.item())
                window.append(loss.item())
                if step % args.log_every == 0:
                    ips = step * batch / (time.time() - t0)
                    print(f"train step {step:>6}  loss {np.mean(window):.4f}  lr {lr_at(step - 1, args.lr, args.min_lr, warmup, total):.3e}  "
                          f"{ips:.0f} img/s", flush=True)
                    window = []
            epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
            print(f"epoch {epoch + 1:>3}  mean loss {epoch_losses[-1]:.4f}  ({time.time() - t0:.0f}s)", flush=True)
        train_s = time.time() - t0
        result.update(epochs=args.epochs, batch_size=batch, steps=step, lr=args.lr, min_lr=args.min_lr,
                      warmup_steps=warmup, weight_decay=args.weight_decay, temperature=args.temperature, solarize=args.solarize,
                      hidden=hidden, out_dim=args.out_dim, separate_views=args.separate_views,
                      epoch_losses=epoch_losses, train_wall_s=train_s,
                      train_images_per_s=step * batch / train_s if train_s > 0 else None)

    t_eval = time.time()
    if args.baseline == "pixels":
        f_train = ((x_train - mean) / std).flatten(1)
        f_test = ((x_test - mean) / std).flatten(1)
    else:
        f_train = encode(encoder, x_train, mean, std)
        f_test = encode(encoder, x_test, mean, std)
    knn = knn_accuracy(f_train, y_train, f_test, y_test, args.knn_k, args.knn_t)
    probe_test, probe_train = linear_probe(f_train, y_train, f_test, y_test, args.probe_l2, args.probe_iters, optimizer=args.probe_optimizer)
    result.update(knn_k=args.knn_k, knn_t=args.knn_t, knn_top1=knn, probe_l2=args.probe_l2,
                  probe_iters=args.probe_iters, linear_top1=probe_test, linear_train_acc=probe_train,
                  eval_wall_s=time.time() - t_eval, total_wall_s=time.time() - t_start)
    line = json.dumps(result)
    print(line, flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
