"""Building blocks shared by several ports in `tok/` (same math in the original projects)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """LLaMA / Lumina RMSNorm: normalise in float32 even for bf16 activations, cast back, then scale (as upstream)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight
