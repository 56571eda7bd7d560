"""TAEF2 (tiny autoencoder for the FLUX.2 VAE latent space) behind the tokenizer interface."""

from __future__ import annotations

from pathlib import Path

import torch

from tok.taesd import TinyDecoder, TinyEncoder
from vision_tokenizers.base import BaseTokenizer
from vision_tokenizers.spec import TokenizerSpec


class TinyAutoencoder(BaseTokenizer):
    """Continuous latents (B, C, H/8, W/8); pixels in [0,1] on both sides, like upstream."""

    def __init__(self, spec: TokenizerSpec, encoder: TinyEncoder, decoder: TinyDecoder,
                 device: torch.device, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        self.encoder = self.prepare(encoder)
        self.decoder = self.prepare(decoder)

    def _encode(self, pixels01: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixels01)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents.to(self.dtype))


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> TinyAutoencoder:
    channels, norm_branch = spec.token_shape[0], spec.config.get("norm_branch", True)
    enc_file, dec_file = (files[f.filename] for f in spec.weights)
    return TinyAutoencoder(spec, TinyEncoder.from_pretrained(enc_file, channels, norm_branch),
                           TinyDecoder.from_pretrained(dec_file, channels, norm_branch), device, dtype)


def build_random(spec: TokenizerSpec, device: torch.device, dtype: torch.dtype) -> TinyAutoencoder:
    """The fixed architecture (latent channels from the spec), random weights (speed only)."""
    from vision_tokenizers.random_weights import random_network

    channels, norm_branch = spec.token_shape[0], spec.config.get("norm_branch", True)
    return TinyAutoencoder(spec, random_network(TinyEncoder, channels, norm_branch, device=device),
                           random_network(TinyDecoder, channels, norm_branch, device=device), device, dtype)
