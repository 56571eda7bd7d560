"""Stable Diffusion VAE (ft-MSE) through diffusers' AutoencoderKL, optionally with 8-bit latents.

Latents are the posterior MODE (deterministic; `sample()` would make runs irreproducible). The 8-bit variant
multiplies by the config's scaling factor (0.18215) and maps to uint8 with diffusers' `AutoencoderTiny.scale_latents`
convention: ``round(clamp(z / 6 + 0.5, 0, 1) * 255)``; decoding inverts it: ``(q / 255 - 0.5) * 6 / 0.18215``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tok.diffusers_io import load_diffusers_model
from tok.taesd import scale_latents, unscale_latents
from vision_tokenizers.base import BaseTokenizer
from vision_tokenizers.spec import TokenizerSpec


def quantize_latents(scaled: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> uint8 (the TAESD / AutoencoderTiny [0,1] mapping, then round(x * 255))."""
    return scale_latents(scaled).mul(255).round().to(torch.uint8)


def dequantize_latents(q: torch.Tensor) -> torch.Tensor:
    return unscale_latents(q.float().div(255))


class SDVAE(BaseTokenizer):
    """Pixels in [-1,1] (spec.pixel_range); latents (B,4,H/8,W/8) fp32 or uint8."""

    def __init__(self, spec: TokenizerSpec, vae, device: torch.device, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        self.vae = self.prepare(vae)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.quantize_bits = spec.config.get("quantize_bits")

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        latents = self.vae.encode(pixels).latent_dist.mode()
        if self.quantize_bits is None:
            return latents.float()
        return quantize_latents(latents.float() * self.scaling_factor)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        latents = tokens.float() if self.quantize_bits is None else dequantize_latents(tokens) / self.scaling_factor
        return self.vae.decode(latents.to(self.dtype)).sample


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> SDVAE:
    from diffusers import AutoencoderKL

    folder = files["config.json"].parent  # a local folder or the hub snapshot: both files sit side by side
    vae = load_diffusers_model(AutoencoderKL, folder, torch_dtype=dtype)
    return SDVAE(spec, vae, device, dtype)


def build_random(spec: TokenizerSpec, device: torch.device, dtype: torch.dtype) -> SDVAE:
    """The released AutoencoderKL from the spec's copy of its config.json, random weights (speed only)."""
    from diffusers import AutoencoderKL

    from vision_tokenizers.random_weights import random_network

    config = dict(spec.random_config or {})
    if config.get("_class_name") != AutoencoderKL.__name__:
        raise ValueError(f"{spec.name}: random_config describes {config.get('_class_name')!r}, not AutoencoderKL")
    vae = random_network(AutoencoderKL.from_config, config, device=device)
    return SDVAE(spec, torch.nn.Module.to(vae, dtype), device, dtype)  # cast as `load_diffusers_model` does
