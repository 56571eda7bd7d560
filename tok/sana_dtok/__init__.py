"""Tar's SANA diffusion de-tokenizer (csuhan/Tar-SANA-600M-512px): TA-Tok features -> images via diffusers' Sana."""

from tok.sana_dtok.conditioning import UPSTREAM_EMBED_DTYPE, SanaConditioning, sana_conditioning
from tok.sana_dtok.configs import DC_AE_F32C32_SANA_1_0, PRESETS, TAR_SANA_600M_512PX_TRANSFORMER, SanaSampling
from tok.sana_dtok.dtok import SanaDTok

__all__ = [
    "DC_AE_F32C32_SANA_1_0", "PRESETS", "TAR_SANA_600M_512PX_TRANSFORMER", "UPSTREAM_EMBED_DTYPE",
    "SanaConditioning", "SanaDTok", "SanaSampling", "sana_conditioning",
]
