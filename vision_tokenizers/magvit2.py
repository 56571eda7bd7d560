"""Open-MAGVIT2 (LFQ) family: ids are (B, h, w) int64 in [0, 2**bits), decoded through the codebook-entry path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tok.magvit2 import Magvit2Tokenizer
from tok.magvit2 import read_config as read_config_file
from vision_tokenizers.base import BaseTokenizer
from vision_tokenizers.spec import TokenizerSpec


def read_config(spec: TokenizerSpec, files: dict[str, Path]) -> dict[str, Any]:
    """`config.json` (upstream yaml layout, `model.init_args`) when shipped, else the spec's own config."""
    return read_config_file(files["config.json"]) if "config.json" in files else dict(spec.config)


class Magvit2(BaseTokenizer):
    """Pixels in [-1,1] (spec.pixel_range); ids (B, h, w)."""

    def __init__(self, spec: TokenizerSpec, model: Magvit2Tokenizer, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__(spec, device, dtype)
        self.model = self.prepare(model)
        self.load_report = getattr(model, "load_report", None)

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        _, indices, _ = self.model.encode(pixels)
        return indices

    @torch.inference_mode()
    def encode_latents(self, pixels01: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latent (B, C, h, w) in the model dtype; its signs are the bits of the ids."""
        return self.model.encoder(self.to_model_range(pixels01.to(self.device, self.dtype)))

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.dtype.is_floating_point:
            raise ValueError(f"{self.spec.name}: expected (B, h, w) integer ids, "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")
        size = self.model.quantize.codebook_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= size):
            raise ValueError(f"{self.spec.name}: ids must be in [0, {size})")  # `&` with bit masks would wrap silently
        return self.model.decode_code(tokens)  # BaseTokenizer converts from [-1, 1] and clamps


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> Magvit2:
    ckpt = next((p for name, p in files.items() if name.endswith(".ckpt")), None)
    if ckpt is None:
        raise ValueError(f"{spec.name}: no .ckpt among the weight files {sorted(files)}")
    return Magvit2(spec, Magvit2Tokenizer.from_pretrained(ckpt, read_config(spec, files)), device, dtype)


def build_random(spec: TokenizerSpec, device: torch.device, dtype: torch.dtype) -> Magvit2:
    """The released network from the spec's copy of its config (upstream yaml layout), random weights."""
    from tok.magvit2.checkpoint import check_config
    from vision_tokenizers.random_weights import random_network

    config = check_config(spec.random_config or {})
    model = random_network(Magvit2Tokenizer, config["ddconfig"], n_embed=config["n_embed"],
                           embed_dim=config["embed_dim"], device=device)
    return Magvit2(spec, model, device, dtype)
