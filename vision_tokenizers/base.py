"""The interface every tokenizer implements, and the shared image <-> tensor conversions."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vision_tokenizers.images import prepare_image
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
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def decode(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def postprocess(self, pixels: torch.Tensor) -> list[Image.Image]: ...


Generators = torch.Generator | Sequence[torch.Generator] | None


def image_seed(run_seed: int, image_id: str) -> int:
    """The seed of one image's sampling: a function of (run seed, image id) only, never of batch, order or worker."""
    digest = hashlib.sha256(f"{run_seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def image_generators(run_seed: int, image_ids: Sequence[str], device: torch.device | str = "cpu") -> list:
    """One seeded generator per image (see `image_seed`)."""
    return [torch.Generator(device=device).manual_seed(image_seed(run_seed, i)) for i in image_ids]


def resize_to(pixels: torch.Tensor, size: int, how: str) -> torch.Tensor:
    """Square resize as the model does it: `how` is "bilinear", "bicubic" (..."-antialias" to antialias)."""
    if pixels.shape[-2:] == (size, size):
        return pixels
    mode, _, antialias = how.partition("-")
    return F.interpolate(pixels, size=(size, size), mode=mode, align_corners=False, antialias=antialias == "antialias")


class BaseTokenizer:
    """Shared plumbing. Subclasses implement `_encode` / `_decode` in the model's own pixel range (`spec.pixel_range`).

    At the interface pixels are (B,3,H,W) float in [0,1] on any device; `encode` moves them to the model's
    device/dtype, resizes to `spec.encoder_resolution` when set, and converts to the model's range. `decode` takes the
    model's output back to float32 [0,1] (clamped) on the model's device. Sampling tokenizers (`spec.stochastic`)
    receive a generator (or one per image) in `_decode`.

    What the benchmark reads besides encode/decode (a plug-in overrides what applies to it):
    `settings` (the chosen generation settings; `vision_tokenizers.load` sets them after `build`), `weight_files`
    (name -> path, set by `load`), `samples_on_encode` (True when `_encode` draws random numbers: it then gets one
    seeded generator per image) and `aux_tokens()` (codes a de-tokenizer produced in the last decode, name ->
    (codes, codebook size), for token statistics).
    """

    samples_on_encode: bool = False

    def __init__(self, spec: TokenizerSpec, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = dtype
        self.settings: dict[str, Any] = dict(spec.settings)  # `vision_tokenizers.load` sets the chosen ones
        self.weight_files: dict[str, str] = {}
        self.code: dict[str, str] | None = None  # the registering plug-in's identity (`load` sets it)

    def aux_tokens(self) -> dict[str, tuple[torch.Tensor, int]]:
        """Codes produced besides the tokens in the last decode (none by default)."""
        return {}

    def prepare(self, module: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
        """Move a network to the tokenizer's device and dtype, in eval mode, without gradients: done once, here.

        A network that keeps some parts in fp32 (e.g. codebooks searched by nearest neighbour) defines
        `cast(device, dtype)`, which is used instead of `.to`.
        """
        dtype = dtype or self.dtype
        cast = getattr(module, "cast", None)
        module = cast(self.device, dtype) if callable(cast) else module.to(device=self.device, dtype=dtype)
        return module.eval().requires_grad_(False)

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> (B,3,R,R) float [0,1]: the same ADM crop the benchmark's datasets use (`prepare_image`)."""
        return pil_to_tensor01([prepare_image(im, self.resolution) for im in images])

    def postprocess(self, pixels: torch.Tensor) -> list[Image.Image]:
        return tensor01_to_pil(pixels)

    def to_model_range(self, pixels01: torch.Tensor) -> torch.Tensor:
        low, high = self.spec.pixel_range
        return pixels01 if (low, high) == (0.0, 1.0) else pixels01 * (high - low) + low

    def from_model_range(self, pixels: torch.Tensor) -> torch.Tensor:
        low, high = self.spec.output_range or self.spec.pixel_range
        pixels = pixels.float()
        return pixels if (low, high) == (0.0, 1.0) else (pixels - low) / (high - low)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Pixels (B,3,H,W) in [0,1] -> tokens. `generator` (one per image) only for tokenizers whose encoder samples
        (e.g. TA-Tok's `quantizer=sample`); the others never receive it."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"{self.spec.name}: expected (B,3,H,W) pixels in [0,1], got {tuple(pixels.shape)}")
        # resize and range conversion in float32 (CPU has no bf16 antialias kernel), then the model's dtype
        pixels = pixels.to(self.device, torch.float32)
        if self.spec.encoder_resolution:
            pixels = resize_to(pixels, self.spec.encoder_resolution, self.spec.encoder_resize)
        kwargs = {"generator": generator} if generator is not None else {}
        return self._encode(self.to_model_range(pixels).to(self.dtype), **kwargs)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Tokens -> (B,3,H,W) float32 [0,1]. `generator`: one, or one per image, for sampling de-tokenizers."""
        if isinstance(generator, Sequence) and len(generator) != len(tokens):
            raise ValueError(f"{self.spec.name}: {len(generator)} generators for a batch of {len(tokens)}")
        kwargs = {"generator": generator} if self.spec.stochastic else {}
        out = self.from_model_range(self._decode(tokens.to(self.device), **kwargs))
        # Non-finite output stays NaN (a clamp would turn Inf into a plausible white image): evaluate fails it.
        return torch.where(torch.isfinite(out), out.clamp(0, 1), torch.nan)

    def reconstruct(self, pixels: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        return self.decode(self.encode(pixels), generator)

    def _encode(self, pixels: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, device={self.device}, dtype={self.dtype})"
