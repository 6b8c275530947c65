"""Golden values for the MAE reconstruction loss (He et al. 2021) test in
crates/autodidact-objectives/tests: the official repo's `MaskedAutoencoderViT.forward_loss`
with norm_pix_loss=True (and, for reference, False).

Generated with torch 2.15.0 (+cu132 PyPI wheel, run on CPU), Python 3.11.7.

    /tmp/venv-torch/bin/python scripts/golden/mae_loss.py > scripts/golden/mae_loss.out

Patchify order (official `patchify`, generalised from its hard-coded C=3 to any C):
    imgs [N, C, H, W], h = H / p, w = W / p
    x = imgs.reshape(N, C, h, p, w, p)
    x = einsum('nchpwq->nhwpqc', x)
    x = x.reshape(N, h * w, p * p * C)
i.e. patch index l = hi * w + wi (row-major over the patch grid), and inside a patch the
element index is (pi * p + qi) * C + c: pixel row, then pixel column, channel LAST
(channels interleaved per pixel), so element [n, l, (pi*p+qi)*C + c] =
imgs[n, c, hi*p + pi, wi*p + qi].

Loss (norm_pix_loss=True):
    mean = target.mean(-1, keepdim=True)
    var  = target.var(-1, keepdim=True)          # torch default: UNBIASED, divides by p*p*C - 1
    target = (target - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)       # [N, L], mean over the p*p*C elements
    loss = (loss * mask).sum() / mask.sum()      # mask [N, L]: 1 = masked (removed) patch

Inputs are built by formula (no files), evaluated in f64 and rounded to f32; they are also
printed flat (row-major, in the shapes given) with 9 significant digits:
With k the flat row-major index into the tensor:
    imgs.flat[k] = (sin(0.37 * k + 0.5) * 2.0 + 0.25) as f32        (computed in f64)
    pred.flat[k] = cos(0.23 * k - 0.4) as f32                        (computed in f64)
Case A: N=2, C=1, H=W=4, p=2 (L=4, patch dim 4), mask = [[1,0,1,0],[0,1,1,1]].
Case B: N=1, C=3, H=W=4, p=2 (L=4, patch dim 12), mask = [[0,1,0,1]]; pins the channel-last
order inside a patch. The patchified target of each case is printed too. Losses in float32;
"ref64" is the float64 evaluation on the same f32 inputs.
"""
import math

import torch


def patchify(imgs, p):
    n, c, hh, ww = imgs.shape
    assert hh % p == 0 and ww % p == 0
    h, w = hh // p, ww // p
    x = imgs.reshape(n, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p * p * c)


def forward_loss(imgs, pred, mask, p, norm_pix_loss=True):
    target = patchify(imgs, p)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = (pred - target) ** 2
    loss = loss.mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def by_formula(shape, f):
    numel = math.prod(shape)
    return torch.tensor([f(k) for k in range(numel)], dtype=torch.float32).reshape(shape)


def flat(t):
    return "[" + ", ".join(f"{v:.9g}" for v in t.flatten().tolist()) + "]"


CASES = [
    ("A", (2, 1, 4, 4), 2, [[1, 0, 1, 0], [0, 1, 1, 1]]),
    ("B", (1, 3, 4, 4), 2, [[0, 1, 0, 1]]),
]
for name, shape, p, mask in CASES:
    n, c, hh, ww = shape
    L, dim = (hh // p) * (ww // p), p * p * c
    imgs = by_formula(shape, lambda k: math.sin(0.37 * k + 0.5) * 2.0 + 0.25)
    pred = by_formula((n, L, dim), lambda k: math.cos(0.23 * k - 0.4))
    mask = torch.tensor(mask, dtype=torch.float32)
    print(f"case {name}: N={n} C={c} H={hh} W={ww} p={p} L={L} patch_dim={dim}")
    print(f"  imgs   = {flat(imgs)}")
    print(f"  pred   = {flat(pred)}")
    print(f"  mask   = {flat(mask)}")
    print(f"  patchified imgs [N, L, p*p*C] = {flat(patchify(imgs, p))}")
    for norm in (True, False):
        l32 = forward_loss(imgs, pred, mask, p, norm).item()
        l64 = forward_loss(imgs.double(), pred.double(), mask.double(), p, norm).item()
        print(f"  norm_pix_loss={norm}: {l32:.8f}  ref64={l64:.10f}")
