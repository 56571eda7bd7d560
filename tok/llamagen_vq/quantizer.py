"""LlamaGen's `VectorQuantizer`, inference only: nearest-code search and codebook lookup, both in fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tok.llamagen_vq.config import CODEBOOK_USED_LEN


class VectorQuantizer(nn.Module):
    """`embedding` (K, D) codebook; with `l2_norm` both codes and inputs are unit vectors (as released).

    The search and the lookup always run in fp32, whatever dtype the weights were cast to, so a bf16 model finds
    the same codes and reads the same (then rounded) entries.
    """

    def __init__(self, codebook_size: int, embed_dim: int, l2_norm: bool = True, show_usage: bool = True) -> None:
        super().__init__()
        self.codebook_size, self.embed_dim = codebook_size, embed_dim
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        if show_usage:
            # Training statistic only (a ring buffer of recent indices); kept because the released file holds it.
            self.register_buffer("codebook_used", torch.zeros(CODEBOOK_USED_LEN))

    def codebook(self) -> torch.Tensor:
        """(K, D) fp32 entries as the model uses them (l2-normalised when `l2_norm`)."""
        weight = self.embedding.weight.float()
        return F.normalize(weight, p=2, dim=-1) if self.l2_norm else weight

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int codes -> (B, D, h, w) fp32 entries (upstream `get_codebook_entry`, channel first)."""
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(f"codes must be integers, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            # Checked here because an out-of-range index on CUDA is a device-side assert, not an exception.
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{int(indices.min())}, "
                             f"{int(indices.max())}]")
        return self.codebook()[indices.long()].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, h, w) pre-quant latent -> (quant (B, D, h, w) fp32, indices (B, h*w) int64, row-major).

        Nearest code by upstream's expanded squared distance |z|^2 + |e|^2 - 2 z.e (after l2-normalising z when
        `l2_norm`). `quant` is the codebook entry itself; upstream's straight-through `z + (e - z)` equals it up to
        ~1e-7 and only matters for gradients.
        """
        b, d, h, w = z.shape
        if d != self.embed_dim:
            raise ValueError(f"latent has {d} channels, the codebook {self.embed_dim}")
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        if self.l2_norm:
            flat = F.normalize(flat, p=2, dim=-1)
        book = self.codebook()
        dist = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.t()
        indices = dist.argmin(dim=1).view(b, h, w)
        return self.lookup(indices), indices.view(b, h * w)
