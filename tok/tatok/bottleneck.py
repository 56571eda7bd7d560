"""TA-Tok's bottleneck: in_linear -> SimVQ (projected, l2-normalised codebook) -> out_linear.

Mirrors `Bottleneck` / `SimVectorQuantizer` of csuhan/Tar 47da8e1 (`tok/ar_dtok/bottleneck.py`); parameter names
match the checkpoint (`bottleneck.in_linear`, `bottleneck.regularizer.embedding`, ...). Sampling takes explicit
generators instead of the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Generators = torch.Generator | Sequence[torch.Generator] | None


class SimVectorQuantizer(nn.Module):
    """SimVQ: codebook = embedding_proj(embedding.weight), l2-normalised when `l2_normalized`.

    Stochastic mode samples from softmax(cos / T); deterministic mode takes the argmax of those probabilities
    (upstream's `eval_deterministic`); without `stochastic` it is the nearest code by squared L2 distance.
    """

    def __init__(self, dim: int, codebook_size: int, l2_normalized: bool = False, stochastic: bool = False,
                 stochastic_temperature: float = 1.0) -> None:
        super().__init__()
        if stochastic and not l2_normalized:
            raise ValueError("stochastic sampling requires l2_normalized")
        self.dim, self.codebook_size = dim, codebook_size
        self.l2_normalized, self.stochastic = l2_normalized, stochastic
        self.embedding = nn.Embedding(codebook_size, dim)
        self.embedding_proj = nn.Linear(dim, dim)
        if stochastic and stochastic_temperature <= 0:
            # Learned inverse temperature (upstream: T <= 0); its value comes from the checkpoint.
            self.stochastic_temperature_inv: nn.Parameter | float = nn.Parameter(torch.tensor(10.0))
        else:
            self.stochastic_temperature_inv = 1 / stochastic_temperature if stochastic else 1.0

    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors as used for matching (normalised when `l2_normalized`)."""
        emb = self.embedding_proj(self.embedding.weight)
        return F.normalize(emb, p=2, dim=-1) if self.l2_normalized else emb

    def forward(self, z: torch.Tensor, deterministic: bool = True,
                generator: Generators = None) -> dict[str, torch.Tensor]:
        """z (B, N, D) -> indices (B, N) int64 and the intermediates upstream returns."""
        if z.ndim != 3:
            raise ValueError(f"expected (batch, tokens, dim), got {tuple(z.shape)}")
        emb = self.codebook()
        z = z.to(emb)
        if self.l2_normalized:
            z = F.normalize(z, p=2, dim=-1)
        b, n, d = z.shape
        flat = z.reshape(b * n, d)
        out: dict[str, torch.Tensor] = {"unregularized_z": z, "codebook": emb}
        if self.stochastic:
            cos_sim = torch.einsum("bd,nd->bn", flat, emb)
            probs = F.softmax(cos_sim * self.stochastic_temperature_inv, dim=-1)
            out["cos_sim"], out["probs"] = cos_sim.view(b, n, -1), probs.view(b, n, -1)
            # argmax of the probabilities, not of cos_sim, exactly as upstream (ties after softmax resolve alike).
            idx = probs.argmax(dim=-1) if deterministic else _sample(probs, b, generator)
        else:
            dist = (flat.pow(2).sum(dim=1, keepdim=True) + emb.pow(2).sum(dim=1)
                    - 2 * torch.einsum("bd,dn->bn", flat, emb.t()))
            out["distances"] = dist.view(b, n, -1)
            idx = dist.argmin(dim=1)
        quantized = F.embedding(idx, emb).view(b, n, d)
        out["quantized"] = z + (quantized - z).detach()  # straight-through, as upstream (== codes up to ~1e-7)
        out["indices"] = idx.view(b, n)
        return out

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (...) -> code vectors (..., D); normalised again, as upstream's get_codebook_entry."""
        z = F.embedding(indices, self.codebook())
        return F.normalize(z, p=2, dim=-1) if self.l2_normalized else z


def _sample(probs: torch.Tensor, batch: int, generator: Generators) -> torch.Tensor:
    """One multinomial draw per row of probs (B*N, K).

    A single generator (or None = global RNG) makes one call over all B*N rows, the order upstream's
    `torch.multinomial` uses; a list of B generators draws each image's rows from its own generator only.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch}")
    rows = probs.view(batch, -1, probs.shape[-1])
    return torch.cat([torch.multinomial(r, 1, generator=g).squeeze(-1) for r, g in zip(rows, gens, strict=True)])


class Bottleneck(nn.Module):
    """in_linear (encoder width -> D) -> SimVQ -> out_linear (D -> D)."""

    def __init__(self, input_dim: int, bottleneck_dim: int, regularizer: SimVectorQuantizer) -> None:
        super().__init__()
        self.in_linear = nn.Linear(input_dim, bottleneck_dim)
        self.out_linear = nn.Linear(bottleneck_dim, bottleneck_dim)
        self.regularizer = regularizer

    def forward(self, x: torch.Tensor, deterministic: bool = True,
                generator: Generators = None) -> dict[str, torch.Tensor]:
        projected_z = self.in_linear(x)
        out = self.regularizer(projected_z, deterministic=deterministic, generator=generator)
        out["projected_z"] = projected_z
        out["encoded"] = self.out_linear(out["quantized"])
        return out

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices -> out_linear(code vectors): upstream's decode_from_bottleneck input to the decoder."""
        return self.out_linear(self.regularizer.lookup(indices))
