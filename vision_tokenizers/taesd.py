"""TAEF2 (tiny autoencoder for the FLUX.2 VAE latent space) behind the tokenizer interface."""

from __future__ import annotations

from pathlib import Path

import torch

from tok.taesd import TinyDecoder, TinyEncoder
from vision_tokenizers.base import BaseTokenizer
from vision_tokenizers.spec import TokenizerSpec


def load_state(module: torch.nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)


class TinyAutoencoder(BaseTokenizer):
    """Continuous latents (B, C, H/8, W/8); pixels in [0,1] on both sides, like upstream."""

    def __init__(self, spec: TokenizerSpec, encoder: TinyEncoder, decoder: TinyDecoder,
                 device: torch.device, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        self.encoder = encoder.to(device, dtype).eval()
        self.decoder = decoder.to(device, dtype).eval()

    def _encode(self, pixels01: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixels01)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents.to(self.dtype))


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> TinyAutoencoder:
    latent_channels = spec.token_shape[0]
    norm_branch = spec.config.get("norm_branch", True)
    encoder = TinyEncoder(latent_channels, norm_branch)
    decoder = TinyDecoder(latent_channels, norm_branch)
    enc_file, dec_file = (f.filename for f in spec.weights)
    load_state(encoder, files[enc_file])
    load_state(decoder, files[dec_file])
    return TinyAutoencoder(spec, encoder, decoder, device, dtype)
