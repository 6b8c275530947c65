"""Golden values for the SimCLR NT-Xent loss (Chen et al. 2020, eq. 1) test in
crates/autodidact-objectives/tests.

Generated with torch 2.15.0 (+cu132 PyPI wheel, run on CPU), Python 3.11.7.

    /tmp/venv-torch/bin/python scripts/golden/nt_xent.py > scripts/golden/nt_xent.out

Definition (as in the SimCLR paper and lightly's NTXentLoss on one device): z1, z2 [N, D]
are the projections of the two views; both are L2-normalised, z = cat(z1, z2) [2N, D],
logits = z @ z.T / tau with the diagonal (self-similarity) set to -inf, the positive of
row i is column (i + N) mod 2N, loss = mean over all 2N rows of the cross-entropy, so
every anchor has 1 positive and 2N - 2 negatives.

Inputs are built by formula (no files), evaluated in f64 and rounded to f32, i.e. in Rust
    z1[i][j] = (0.3 * i as f64 + 0.7 * j as f64).sin() as f32
    z2[i][j] = ((0.5 * i as f64 - 0.2 * j as f64).cos() + 0.1 * j as f64) as f32
(the same inputs as info_nce.py), N = 4, D = 3; they are also printed flat (row-major)
with 9 significant digits, enough to round-trip f32. The loss is computed in float32;
"ref64" is the float64 evaluation on the same f32 inputs.
"""
import math

import torch
import torch.nn.functional as F

N, D = 4, 3
z1 = torch.tensor([[math.sin(0.3 * i + 0.7 * j) for j in range(D)] for i in range(N)], dtype=torch.float32)
z2 = torch.tensor([[math.cos(0.5 * i - 0.2 * j) + 0.1 * j for j in range(D)] for i in range(N)], dtype=torch.float32)


def nt_xent(z1, z2, tau):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def flat(t):
    return "[" + ", ".join(f"{v:.9g}" for v in t.flatten().tolist()) + "]"


print(f"N={N} D={D}")
print(f"z1 = {flat(z1)}")
print(f"z2 = {flat(z2)}")
for tau in (0.5, 0.1):
    l32 = nt_xent(z1, z2, tau).item()
    l64 = nt_xent(z1.double(), z2.double(), tau).item()
    print(f"tau={tau}: {l32:.8f}  ref64={l64:.10f}")
