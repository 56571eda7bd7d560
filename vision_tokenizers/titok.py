"""TiTok family: 1D discrete tokens (e.g. 32 ids from 4096 codes for L-32), decoded through a MaskGIT-VQGAN stage."""

from __future__ import annotations

from pathlib import Path

import torch

from tok.titok import TiTokConfig, TiTokModel
from vision_tokenizers.base import BaseTokenizer
from vision_tokenizers.spec import TokenizerSpec

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OVERRIDES_FILE = "hardcoded_overrides.json"


class TiTok(BaseTokenizer):
    """ids (B, N) int64 <-> pixels (B,3,R,R) in [0,1]. The model sees [0,1] pixels directly (no mean/std)."""

    def __init__(self, spec: TokenizerSpec, model: TiTokModel, cfg: TiTokConfig,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(spec, device, dtype)
        self.cfg = cfg
        self.model = self.prepare(model)  # TiTokModel.cast keeps the codebooks fp32: VQ search and pixel mix

    def _encode(self, pixels01: torch.Tensor) -> torch.Tensor:
        size = self.cfg.image_size
        if pixels01.shape[-2:] != (size, size):
            raise ValueError(f"{self.spec.name}: expects {size}x{size} inputs (fixed positional embeddings), "
                             f"got {tuple(pixels01.shape[-2:])}")
        _, ids = self.model.encode(pixels01)  # (B, 1, N)
        return ids.flatten(1)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decode_tokens(tokens.long())  # unclamped; BaseTokenizer.decode clamps to [0,1]


def _weights_file(files: dict[str, Path]) -> Path:
    found = [p for name, p in files.items() if name.endswith(WEIGHT_SUFFIXES)]
    if len(found) != 1:
        raise ValueError(f"TiTok needs exactly one weights file ({'/'.join(WEIGHT_SUFFIXES)}), got {sorted(files)}")
    return found[0]


def _check_spec(spec: TokenizerSpec, cfg: TiTokConfig) -> None:
    got = (cfg.image_size, (cfg.num_latent_tokens,), cfg.codebook_size)
    want = (spec.resolution, tuple(spec.token_shape), spec.codebook_size)
    if got != want:
        raise ValueError(f"{spec.name}: config.json gives (resolution, token_shape, codebook_size)={got}, "
                         f"the spec says {want}")


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> TiTok:
    model = TiTokModel.from_pretrained(files["config.json"], _weights_file(files), files.get(OVERRIDES_FILE))
    _check_spec(spec, model.config)
    return TiTok(spec, model, model.config, device, dtype)


def build_random(spec: TokenizerSpec, device: torch.device, dtype: torch.dtype) -> TiTok:
    """The released network from the spec's copy of its config.json (upstream's hard-coded values are
    `TiTokConfig`'s defaults), random weights (speed only)."""
    from vision_tokenizers.random_weights import random_network

    cfg = TiTokConfig.from_dict(spec.random_config or {})
    _check_spec(spec, cfg)
    model = random_network(TiTokModel, cfg, device=device)
    model.config = cfg
    return TiTok(spec, model, cfg, device, dtype)
