"""TiTok configuration: config.json of the release plus the values upstream hard-codes (next to the model)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tok.checkpoint import read_json_file
from tok.titok.pixel_decoder import PixelDecoderConfig


@dataclass(frozen=True)
class ViTSize:
    width: int
    num_layers: int
    num_heads: int


# Upstream's width / layers / heads table (TiTokEncoder and TiTokDecoder); overrides may add sizes ("tiny").
DEFAULT_MODEL_SIZES: dict[str, ViTSize] = {
    "small": ViTSize(512, 8, 8),
    "base": ViTSize(768, 12, 12),
    "large": ViTSize(1024, 24, 16),
}


@dataclass(frozen=True)
class TiTokConfig:
    """Everything that shapes the network. Defaults are the released TiTok-L-32 (256 px, 32 tokens, 4096 codes)."""

    image_size: int = 256
    enc_patch_size: int = 16
    dec_patch_size: int = 16
    num_latent_tokens: int = 32
    token_size: int = 12
    codebook_size: int = 4096
    use_l2_norm: bool = True
    enc_model_size: str = "large"
    dec_model_size: str = "large"
    model_sizes: Mapping[str, ViTSize] = field(default_factory=lambda: dict(DEFAULT_MODEL_SIZES))
    # Hard-coded upstream (not in config.json): decoder head outputs = pixel codebook rows, and the pixel VQGAN.
    pixel_codebook_size: int = 1024
    pixel: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)

    def __post_init__(self) -> None:
        self._size(self.enc_model_size), self._size(self.dec_model_size)  # fail early on an unknown size name

    def _size(self, name: str) -> ViTSize:
        try:
            return self.model_sizes[name]
        except KeyError:
            raise ValueError(f"unknown ViT size {name!r}; known: {', '.join(self.model_sizes)}") from None

    @property
    def enc(self) -> ViTSize:
        return self._size(self.enc_model_size)

    @property
    def dec(self) -> ViTSize:
        return self._size(self.dec_model_size)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TiTokConfig:
        """Build from a parsed config.json (the release's OmegaConf dump) and an optional hardcoded_overrides.json.

        Only `model.vq_model` and `dataset.preprocessing.crop_size` are read; the `generator` block (with its
        unresolved `${...}` interpolation string) is not used by the tokenizer and is never interpreted.
        """
        try:
            vq = config["model"]["vq_model"]
            image_size = int(config["dataset"]["preprocessing"]["crop_size"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"config.json lacks {exc}; expected model.vq_model and dataset.preprocessing") from None
        _require(vq, "quantize_mode", "vq", "only VQ TiTok checkpoints are supported")
        _require(vq, "is_legacy", True, "only the legacy layout (encoder reshape, 1024-logit head) is implemented")
        _require(vq, "finetune_decoder", True, "only checkpoints with the MaskGIT-VQGAN pixel stage are supported")
        kwargs: dict[str, Any] = dict(
            image_size=image_size,
            enc_patch_size=int(vq["vit_enc_patch_size"]),
            dec_patch_size=int(vq["vit_dec_patch_size"]),
            num_latent_tokens=int(vq["num_latent_tokens"]),
            token_size=int(vq["token_size"]),
            codebook_size=int(vq["codebook_size"]),
            use_l2_norm=bool(vq.get("use_l2_norm", False)),  # upstream's VectorQuantizer default
            enc_model_size=str(vq["vit_enc_model_size"]),
            dec_model_size=str(vq["vit_dec_model_size"]),
        )
        kwargs.update(_override_kwargs(overrides or {}))
        return cls(**kwargs)


def _require(vq: Mapping[str, Any], key: str, default: Any, why: str) -> None:
    value = vq.get(key, default)
    if value != default:
        raise NotImplementedError(f"config.json model.vq_model.{key}={value!r}: {why}")


def _override_kwargs(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """hardcoded_overrides.json -> TiTokConfig fields. Its top-level values are the tiny model's; `released_l32`
    and `notes` are documentation (the L-32 values are this module's defaults)."""
    out: dict[str, Any] = {}
    if "model_sizes" in overrides:
        sizes = dict(DEFAULT_MODEL_SIZES)
        for name, s in overrides["model_sizes"].items():
            sizes[name] = ViTSize(int(s["width"]), int(s["num_layers"]), int(s["num_heads"]))
        out["model_sizes"] = sizes
    if "pixel_codebook_size" in overrides:
        out["pixel_codebook_size"] = int(overrides["pixel_codebook_size"])
    if "pixel_vqgan" in overrides:
        pv = dict(overrides["pixel_vqgan"])
        pv["channel_mult"] = tuple(int(m) for m in pv["channel_mult"])
        out["pixel"] = PixelDecoderConfig(**pv)
    return out


def read_json(path: str | Path) -> dict[str, Any]:
    return read_json_file(path)


