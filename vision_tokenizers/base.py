"""The interface every tokenizer implements, and the shared image <-> tensor conversions."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from vision_tokenizers.images import center_crop_resize
from vision_tokenizers.spec import TokenizerSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def to_uint8(pixels01: torch.Tensor) -> torch.Tensor:
    """[0,1] float -> uint8 with rounding (never the flooring `(x*255).to(uint8)`), the one place we quantise."""
    return pixels01.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def pil_to_tensor01(images: list[Image.Image]) -> torch.Tensor:
    """Same-size RGB PIL images -> (B,3,H,W) float32 in [0,1]."""
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)


def tensor01_to_pil(pixels01: torch.Tensor) -> list[Image.Image]:
    arr = to_uint8(pixels01).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


@runtime_checkable
class VisionTokenizer(Protocol):
    spec: TokenizerSpec

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor: ...
    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def decode(self, tokens: torch.Tensor) -> torch.Tensor: ...
    def postprocess(self, pixels: torch.Tensor) -> list[Image.Image]: ...


class BaseTokenizer:
    """Shared plumbing. Subclasses implement `_encode` / `_decode` in the model's own range.

    At the interface pixels are (B,3,H,W) float in [0,1] on any device; `encode` moves them to the model's
    device/dtype, `decode` returns float32 in [0,1] (clamped) on the model's device.
    """

    def __init__(self, spec: TokenizerSpec, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return pil_to_tensor01([center_crop_resize(im, self.resolution) for im in images])

    def postprocess(self, pixels: torch.Tensor) -> list[Image.Image]:
        return tensor01_to_pil(pixels)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"{self.spec.name}: expected (B,3,H,W) pixels in [0,1], got {tuple(pixels.shape)}")
        return self._encode(pixels.to(self.device, self.dtype))

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self._decode(tokens.to(self.device))
        return out.float().clamp(0, 1)

    def reconstruct(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(pixels))

    def _encode(self, pixels01: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, device={self.device}, dtype={self.dtype})"
