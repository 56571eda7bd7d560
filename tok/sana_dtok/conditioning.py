"""Tar's glue between TA-Tok features and SANA: the features ARE the caption embeddings.

Upstream (`tok/dif_dtok_sana.py` of csuhan/Tar) hands the TA-Tok decoder output (B, 729, 1152) to `SanaPipeline` as
`prompt_embeds`, cast to bfloat16, with an all-ones int16 mask: no projection, normalisation, padding or truncation
(Sana's 300-token `select_index` only applies to text prompts). For classifier-free guidance it passes the
release's `negative_prompt_embeds.pth` (one (L, 1152) tensor) with an all-ones mask; diffusers casts those to the
text encoder's dtype, which upstream has set to bfloat16. Both casts are kept here so fp32 runs see the same
bf16-rounded conditioning as upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# What upstream rounds prompt and negative embeddings through (its `.to(bfloat16)` and bf16 text encoder).
UPSTREAM_EMBED_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class SanaConditioning:
    """The four conditioning tensors `SanaPipeline.__call__` receives (negatives are None without guidance)."""

    prompt_embeds: torch.Tensor  # (B, N, C)
    prompt_attention_mask: torch.Tensor  # (B, N) int16 ones
    negative_prompt_embeds: torch.Tensor | None = None  # (B, L, C)
    negative_prompt_attention_mask: torch.Tensor | None = None  # (B, L) int16 ones

    def pipeline_kwargs(self) -> dict[str, Any]:
        # negative_prompt=None: the pipeline's default "" would clash with negative_prompt_embeds.
        return dict(prompt_embeds=self.prompt_embeds, prompt_attention_mask=self.prompt_attention_mask,
                    negative_prompt_embeds=self.negative_prompt_embeds,
                    negative_prompt_attention_mask=self.negative_prompt_attention_mask, negative_prompt=None)


def uses_guidance(guidance_scale: float) -> bool:
    """diffusers' rule (`do_classifier_free_guidance`): the negative branch runs only above 1."""
    return guidance_scale > 1.0


def sana_conditioning(features: torch.Tensor, negative_embeds: torch.Tensor | None = None, *,
                      guidance_scale: float = 1.0, embed_dtype: torch.dtype = UPSTREAM_EMBED_DTYPE,
                      caption_channels: int | None = None) -> SanaConditioning:
    """TA-Tok decoder features (B, N, C) -> SANA conditioning, as upstream builds it.

    `negative_embeds` (L, C) or (1, L, C) is required when `guidance_scale > 1` and broadcast to the batch (upstream
    only ever ran batch 1); it is not passed at all otherwise (diffusers would ignore it).
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (B, N, C), got shape {tuple(features.shape)}")
    b, n, c = features.shape
    if caption_channels is not None and c != caption_channels:
        raise ValueError(f"features have width {c}, the transformer's caption_channels is {caption_channels}")
    prompt = features.to(embed_dtype)
    mask = torch.ones((b, n), dtype=torch.int16, device=features.device)
    if not uses_guidance(guidance_scale):
        return SanaConditioning(prompt, mask)
    if negative_embeds is None:
        raise ValueError(f"guidance_scale {guidance_scale} > 1 needs negative_prompt_embeds")
    neg = negative_embeds[None] if negative_embeds.ndim == 2 else negative_embeds
    if neg.ndim != 3 or neg.shape[0] != 1 or neg.shape[-1] != c:
        raise ValueError(f"negative embeddings must be (L, {c}) or (1, L, {c}), got {tuple(negative_embeds.shape)}")
    neg = neg.to(device=features.device, dtype=embed_dtype).expand(b, -1, -1)
    neg_mask = torch.ones(neg.shape[:2], dtype=torch.int16, device=features.device)
    return SanaConditioning(prompt, mask, neg, neg_mask)
