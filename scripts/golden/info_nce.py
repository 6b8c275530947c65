"""Golden values for the InfoNCE (SimCSE) loss test in crates/autodidact-objectives/tests.

    python scripts/golden/info_nce.py
"""
import math

import torch
import torch.nn.functional as F

z1 = torch.tensor([[math.sin(0.3 * i + 0.7 * j) for j in range(3)] for i in range(4)], dtype=torch.float32)
z2 = torch.tensor([[math.cos(0.5 * i - 0.2 * j) + 0.1 * j for j in range(3)] for i in range(4)], dtype=torch.float32)
for tau in (0.1, 0.05):
    logits = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / tau
    print(f"tau={tau}: {F.cross_entropy(logits, torch.arange(4)).item():.8f}")
