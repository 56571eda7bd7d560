"""Next-code sampling of AR-DTok: temperature, top-k / top-p filtering and the multinomial draw.

Semantics follow Tar@47da8e1 `generate.sample` / `top_k_top_p_filtering` (itself HF transformers v3.2): top-k keeps
every logit >= the k-th largest (ties kept), top-p keeps the smallest sorted prefix whose softmax mass exceeds p
(the first token over p stays), and the draw is one `torch.multinomial(probs, 1)` on float32 probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

Generators = torch.Generator | Sequence[torch.Generator] | None


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0,
                       filter_value: float = float("-inf")) -> torch.Tensor:
    """Copy of `logits` (..., V) with everything outside the top-k / nucleus set to `filter_value`.

    `top_k <= 0` and `top_p >= 1` disable the respective filter; top-k runs first. At least one token survives.
    """
    logits = logits.clone()
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth_largest = torch.topk(logits, k)[0][..., -1:]
        logits[logits < kth_largest] = filter_value
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        over = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > top_p
        # Shift right: the token that crosses p is kept, and so is the most likely one.
        drop_sorted = torch.zeros_like(over)
        drop_sorted[..., 1:] = over[..., :-1]
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits[drop] = filter_value
    return logits


def check_sampling_args(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p!r}")


def code_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(B, V) logits -> float32 sampling distribution, in upstream's order (temperature, filter, softmax)."""
    logits = logits / max(temperature, 1e-5)
    if top_k > 0 or top_p < 1.0:
        logits = top_k_top_p_filter(logits, top_k=top_k, top_p=top_p)
    return F.softmax(logits.float(), dim=-1)


def draw(probs: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """One code per row of (B, V) `probs` -> (B, 1) int64.

    A single generator (or None: torch's global RNG, as upstream) makes one batched multinomial call, which is
    upstream's RNG consumption. A sequence of B generators draws row i from generator i alone, so a row never
    depends on the batch it is in.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, num_samples=1, generator=generator)
    generators = list(generator)
    if len(generators) != probs.shape[0]:
        raise ValueError(f"got {len(generators)} per-row generators for a batch of {probs.shape[0]}")
    return torch.cat([torch.multinomial(probs[i:i + 1], num_samples=1, generator=g)
                      for i, g in enumerate(generators)])
