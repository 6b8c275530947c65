# Golden values for the masked-language-model (MLM) loss, computed with PyTorch.
#
# Generated with torch 2.15.0 (+cu132 PyPI wheel, run on CPU), numpy 2.4.6, Python 3.11.7.
# Run:
#   python3 -m venv /tmp/venv-torch
#   /tmp/venv-torch/bin/pip install torch numpy     # PyPI wheel, pulls ~5 GB of nvidia-* deps
#   /tmp/venv-torch/bin/python scripts/golden/mlm_loss.py > scripts/golden/mlm_loss.out
#
# All inputs are built by formula (no files), so a Rust test can rebuild them:
# each logit is evaluated in f64 and then rounded to f32, i.e. in Rust
#   (3.0_f64 * (0.7 * i as f64 + 1.3 * j as f64).sin()) as f32
# Losses are computed in float32 (torch's default, what the Rust code does);
# a float64 evaluation on the same f32 inputs is printed as "ref64" to show
# how far float32 rounding moves the result (expect ~1e-7 relative).
import math

import torch
import torch.nn.functional as F

IGNORE = -100


def fmt(xs):
    """Format a tensor/list of numbers with 9 significant digits."""
    if isinstance(xs, torch.Tensor):
        xs = xs.reshape(-1).tolist()
    return "[" + ", ".join(f"{x:.9g}" for x in xs) + "]"


def ce(logits, labels, **kw):
    """Cross entropy in f32 (golden) and f64 (reference) on the same f32 logits."""
    return F.cross_entropy(logits, labels, **kw), F.cross_entropy(logits.double(), labels, **kw)


print(f"# torch {torch.__version__}")

# ---- Case A: cross entropy over the gathered masked rows (M=5, V=7) ----
M, V = 5, 7
logits_a = torch.tensor(
    [[3.0 * math.sin(0.7 * i + 1.3 * j) for j in range(V)] for i in range(M)],
    dtype=torch.float64,
).float()
labels_a = torch.tensor([0, 6, 3, 3, 1])
loss32, loss64 = ce(logits_a, labels_a)
rows32, rows64 = ce(logits_a, labels_a, reduction="none")
pred = logits_a.argmax(dim=1)
acc = (pred == labels_a).float().mean()
print("A.logits (row-major 5x7) =", fmt(logits_a))
print("A.labels =", labels_a.tolist())
print(f"A.loss_mean = {loss32.item():.9g}   (ref64 {loss64.item():.9g})")
print("A.loss_rows =", fmt(rows32), "  (ref64", fmt(rows64) + ")")
print("A.argmax =", pred.tolist())
print(f"A.accuracy = {acc.item():.9g}")

# ---- Case B: ignore_index form, logits [B=2, T=4, V=7], -100 = not masked ----
B, T = 2, 4
logits_b = torch.tensor(
    [[[2.0 * math.cos(0.5 * b + 0.9 * t - 0.4 * j) for j in range(V)] for t in range(T)] for b in range(B)],
    dtype=torch.float64,
).float()
labels_b = torch.tensor([[IGNORE, 2, IGNORE, 5], [1, IGNORE, IGNORE, 0]])
flat_logits, flat_labels = logits_b.view(-1, V), labels_b.view(-1)
loss32, loss64 = ce(flat_logits, flat_labels, ignore_index=IGNORE)
pos32, _ = ce(flat_logits, flat_labels, ignore_index=IGNORE, reduction="none")
mask = flat_labels != IGNORE
acc_b = (flat_logits.argmax(dim=1)[mask] == flat_labels[mask]).float().mean()
print("B.logits (row-major 2x4x7) =", fmt(logits_b))
print("B.labels =", labels_b.tolist())
print(f"B.loss_mean = {loss32.item():.9g}   (ref64 {loss64.item():.9g})")
print("B.loss_positions (0 where ignored) =", fmt(pos32))
print(f"B.num_masked = {int(mask.sum())}")
print("B.argmax =", flat_logits.argmax(dim=1).tolist())
print(f"B.accuracy_masked = {acc_b.item():.9g}")

# ---- Case C: case A with label_smoothing=0.1 ----
loss32, loss64 = ce(logits_a, labels_a, label_smoothing=0.1)
rows32, _ = ce(logits_a, labels_a, label_smoothing=0.1, reduction="none")
print(f"C.loss_mean = {loss32.item():.9g}   (ref64 {loss64.item():.9g})")
print("C.loss_rows =", fmt(rows32))
