"""`TokenizerPlayground`: try any registered tokenizer on your own images from Python.

    from vision_tokenizers.playground import TokenizerPlayground

    playground = TokenizerPlayground(device="cpu")
    playground.load("taef2_512")
    tokens = playground.encode("photo.jpg")        # a path, PIL image, numpy array or tensor
    image = playground.decode(tokens)              # PIL image at the tokenizer's resolution
    print(playground.info()["bits_per_pixel"])

Images go through the benchmark's own preprocessing (EXIF orientation, RGB, ADM centre crop at the tokenizer's
resolution) and `measure` computes the benchmark's per-image metrics with `vision_tokenizers.evaluate.evaluate`, so
a number seen here is the number the benchmark reports for that image (for sampling de-tokenizers: given the same run
seed and image id, which `measure` takes from a path's file name as the benchmark does). The CLI (`vtok`) and the
Gradio demo are built on this class.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from vision_tokenizers.base import DTYPES, to_uint8
from vision_tokenizers.datasets import ImageSet
from vision_tokenizers.images import load_image, prepare_image, to_rgb
from vision_tokenizers.loader import crop_file
from vision_tokenizers.plugins import discover
from vision_tokenizers.registry import get_spec, load
from vision_tokenizers.spec import TokenizerSpec
from vision_tokenizers.weights import WeightsUnavailable, default_weights_dir, resolve_weights

ImageLike = Any  # PIL.Image | str | os.PathLike | np.ndarray | torch.Tensor


# ---------------------------------------------------------------------------------------------------------------------
# inputs


def _rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB exactly as `load_image` converts files (16-bit scaling, CMYK profile, transparency on white)."""
    return to_rgb(image)


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    """(H,W), (H,W,C) or (C,H,W) with C in 1/3/4; uint8, or float in [0,1]."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an image array (H,W), (H,W,3|4) or (3|4,H,W); got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"image arrays must be uint8 or float in [0,1]; got {arr.dtype}")
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float image arrays must be in [0,1]; got values in [{lo:.3g}, {hi:.3g}] "
                             "(pass uint8, or divide by 255)")
        arr = np.round(np.clip(arr.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    return _rgb(Image.fromarray(np.ascontiguousarray(arr)))


def as_images(image: ImageLike | list[ImageLike]) -> tuple[list[Image.Image], bool]:
    """Any supported input -> (RGB PIL images, whether a single image was given).

    Paths are opened like the benchmark's files (EXIF orientation applied; `BadImage` with one line if unreadable).
    Tensors are (3,H,W) or a (B,3,H,W) batch, uint8 or float in [0,1]; arrays are (H,W,3) or (3,H,W).
    """
    if isinstance(image, (list, tuple)):
        images = [im for item in image for im in as_images(item)[0]]
        return images, False
    if isinstance(image, Image.Image):
        return [_rgb(ImageOps.exif_transpose(image))], True
    if isinstance(image, (str, os.PathLike)):
        return [load_image(image)], True
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        if t.ndim == 4:
            return [_array_to_pil(x.numpy()) for x in t], False
        return [_array_to_pil(t.numpy())], True
    if isinstance(image, np.ndarray):
        if image.ndim == 4:
            return [_array_to_pil(x) for x in image], False
        return [_array_to_pil(image)], True
    raise TypeError(f"unsupported image type {type(image).__name__}: pass a PIL image, a path, a numpy array or a "
                    "torch tensor (or a list of them)")


def _crops(image: ImageLike | list[ImageLike], resolution: int) -> tuple[list[torch.Tensor], bool]:
    """(uint8 (3,R,R) centre crops, single?) of any supported input: files through the benchmark's loader
    (`crop_file`, what its DataLoader workers run), in-memory images through the same `prepare_image`."""
    if isinstance(image, (list, tuple)):
        return [crop for item in image for crop in _crops(item, resolution)[0]], False
    if isinstance(image, (str, os.PathLike)):
        return [crop_file(image, resolution)], True
    images, single = as_images(image)
    return [torch.from_numpy(np.array(prepare_image(im, resolution))).permute(2, 0, 1) for im in images], single


# ---------------------------------------------------------------------------------------------------------------------
# results


@dataclass
class Reconstruction:
    """One image through one tokenizer: both 8-bit images (what metrics compare), tokens, metrics, timings."""

    tokenizer: str
    original: np.ndarray          # uint8 (H,W,3): the centre crop at the tokenizer's resolution
    reconstruction: np.ndarray    # uint8 (H,W,3)
    tokens: torch.Tensor          # this image's tokens (no batch dimension), on the CPU
    metrics: dict[str, float]     # psnr, ssim, mae, rmse, bpp, and lpips when its backbone is available
    encode_s: float
    decode_s: float
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.reconstruction)

    @property
    def original_image(self) -> Image.Image:
        return Image.fromarray(self.original)


class _Timed:
    """The tokenizer as `evaluate` sees it, with the wall time of each stage (device synchronised)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.seconds = {"encode": 0.0, "decode": 0.0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def _sync(self) -> None:
        device = torch.device(self._tokenizer.device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def _run(self, stage: str, fn, *args, **kwargs):
        self._sync()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self._sync()
        self.seconds[stage] += time.perf_counter() - start
        return out

    def encode(self, *args, **kwargs):
        return self._run("encode", self._tokenizer.encode, *args, **kwargs)

    def decode(self, *args, **kwargs):
        return self._run("decode", self._tokenizer.decode, *args, **kwargs)


def _present(wf, weights_dir: Path) -> Path | None:
    """Where a weight file already is (weights folder, then hub cache), without hashing or network."""
    local = weights_dir / wf.local_dir / wf.filename
    if local.is_file():
        return local
    if wf.repo_id:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(wf.repo_id, wf.filename, revision=wf.revision)
        if isinstance(cached, str):
            return Path(cached)
    return None


def weights_status(name: str, weights_dir: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(present, where): whether `name`'s weights are on this machine (weights folder or hub cache), checked without
    network and without hashing gigabytes (checksums are verified when the tokenizer loads); `where` is the folder
    they are in, or the one-line reason they are not."""
    spec = get_spec(name)
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    found = [_present(wf, folder) for wf in spec.weights]
    if all(found):
        return True, ", ".join(sorted({str(p.parent) for p in found})) or "(no files needed)"
    try:  # the loader's own one-line reason (what is missing, where to put it, where it comes from)
        resolve_weights(spec, folder, offline=True)
    except WeightsUnavailable as exc:
        return False, str(exc)
    return True, str(folder)


def spec_info(spec: TokenizerSpec) -> dict[str, Any]:
    return {"name": spec.name, "family": spec.family, "kind": spec.kind, "resolution": spec.resolution,
            "num_tokens": spec.num_tokens, "token_shape": tuple(spec.token_shape),
            "codebook_size": spec.codebook_size, "bits_per_token": spec.bits_per_token,
            "bits_per_pixel": spec.bits_per_pixel, "description": spec.description, "tiny": spec.tiny}


# ---------------------------------------------------------------------------------------------------------------------
# the playground


class TokenizerPlayground:
    """Load tokenizers by name and push images through them.

    `device`: "cpu", "cuda", "cuda:N"; `dtype`: "fp32" | "bf16" | "fp16" (or a torch dtype). `weights_dir` and
    `offline` are those of `vision_tokenizers.load` (default `$VTOK_WEIGHTS` or `model_weights/`; offline when
    `HF_HUB_OFFLINE=1`). Loaded tokenizers are kept, so switching back with `load` is free. `plugins`: modules or
    ``.py`` files that register tokenizers, loaded like ``--plugin`` (installed entry points and ``VTOK_PLUGINS``
    are found as everywhere).
    """

    def __init__(self, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
                 weights_dir: str | os.PathLike | None = None, offline: bool | None = None,
                 plugins: Sequence[str] = ()) -> None:
        discover(plugins)
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
        self.offline = offline
        self.tokenizers: dict[str, Any] = {}
        self.current: str | None = None
        self._lpips: Any = None
        self.lpips_reason: str | None = None

    # -- models
    def load(self, name: str) -> Any:
        """Build `name` (once) and make it the current tokenizer; raises `WeightsUnavailable` (one line) when its
        weights cannot be had, `KeyError` for an unknown name."""
        tokenizer = self.tokenizer(name)
        self.current = name
        return tokenizer

    def unload(self, name: str | None = None) -> None:
        name = name or self.current
        self.tokenizers.pop(name, None)
        if self.current == name:
            self.current = None

    def tokenizer(self, name: str | None = None) -> Any:
        """The tokenizer `name` (built on first use, without changing the current one), or the current one."""
        name = name or self._current_name()
        if name not in self.tokenizers:
            self.tokenizers[name] = load(name, device=self.device, dtype=self.dtype, weights_dir=self.weights_dir,
                                         offline=self.offline)
        return self.tokenizers[name]

    def info(self, name: str | None = None) -> dict[str, Any]:
        """num_tokens, codebook_size (None for continuous latents), resolution, bits_per_pixel, token_shape, kind,
        bits_per_token, family, description of `name` (any registered tokenizer) or of the current one."""
        return {**spec_info(get_spec(name or self._current_name())), "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch.")}

    # -- images
    def preprocess(self, image: ImageLike | list[ImageLike], name: str | None = None) -> tuple[torch.Tensor, bool]:
        """(uint8 (B,3,R,R) centre crops at the tokenizer's resolution, single?) for any supported input."""
        crops, single = _crops(image, get_spec(name or self._current_name()).resolution)
        return torch.stack(crops), single

    def encode(self, image: ImageLike | list[ImageLike], name: str | None = None) -> torch.Tensor:
        """Tokens of one image (shape `info()["token_shape"]`), or of a list / batch of images (batch first).
        Ids are integer tensors, latents float tensors; they stay on the tokenizer's device."""
        tokenizer = self.tokenizer(name)
        pixels, single = self.preprocess(image, tokenizer.spec.name)
        tokens = tokenizer.encode(pixels.float() / 255)
        return tokens[0] if single else tokens

    def decode(self, tokens: torch.Tensor | np.ndarray, name: str | None = None,
               generator: torch.Generator | None = None) -> Image.Image | list[Image.Image]:
        """PIL image(s) from tokens: one image's tokens give one image, a batch gives a list. `generator` is passed
        to tokenizers that sample while decoding."""
        tokenizer = self.tokenizer(name)
        tokens = torch.as_tensor(tokens)
        single = tokens.ndim == len(tokenizer.spec.token_shape)
        batch = tokens.unsqueeze(0) if single else tokens
        pixels = tokenizer.decode(batch) if generator is None else tokenizer.decode(batch, generator=generator)
        images = [Image.fromarray(a) for a in to_uint8(pixels).permute(0, 2, 3, 1).cpu().numpy()]
        return images[0] if single else images

    def reconstruct(self, image: ImageLike | list[ImageLike], name: str | None = None,
                    generator: torch.Generator | None = None) -> Image.Image | list[Image.Image]:
        """decode(encode(image)): the reconstruction as a PIL image (a list for several images)."""
        return self.decode(self.encode(image, name), name, generator)

    # -- metrics
    def lpips(self) -> Any:
        """The LPIPS metric (AlexNet), created once; None (reason in `lpips_reason`) when its backbone is absent."""
        if self._lpips is None and self.lpips_reason is None:
            from vision_tokenizers.metrics import LPIPS, MetricUnavailable

            try:
                self._lpips = LPIPS(self.device, allow_download=not self.offline)
            except MetricUnavailable as exc:
                self.lpips_reason = str(exc)
        return self._lpips

    def measure(self, image: ImageLike, name: str | None = None, *, lpips: bool = True, seed: int = 0,
                image_id: str | None = None) -> Reconstruction:
        """Reconstruct one image and compute the benchmark's per-image metrics, with encode/decode wall times.

        A sampling de-tokenizer draws from a generator seeded from (`seed`, image id), as in the benchmark: the id of
        a path is the one the benchmark gives that file (its stem), so `measure(path, seed=s)` reproduces the number
        `pytest bench --seed s` reports for it. Other inputs have no file name: pass `image_id` (the id the benchmark
        used) to reproduce it; without one they are seeded as "image"."""
        from vision_tokenizers.evaluate import evaluate

        tokenizer = self.tokenizer(name)
        pixels, single = self.preprocess(image, tokenizer.spec.name)
        if not single and len(pixels) != 1:
            raise ValueError("measure() takes one image")
        if image_id is None:
            image_id = ImageSet.image_id(Path(image)) if isinstance(image, (str, os.PathLike)) else "image"
        timed = _Timed(tokenizer)
        captured = []
        lpips_metric = self.lpips() if lpips else None
        evaluate(timed, [([image_id], pixels)], lpips=lpips_metric, on_batch=captured.append, run_seed=seed)
        batch = captured[0]
        skipped = {"lpips": self.lpips_reason or "not requested"} if lpips_metric is None else {}
        return Reconstruction(
            tokenizer=tokenizer.spec.name,
            original=batch.original[0].permute(1, 2, 0).cpu().numpy(),
            reconstruction=batch.reconstruction[0].permute(1, 2, 0).cpu().numpy(),
            tokens=batch.tokens[0].detach().cpu(), metrics=dict(batch.metrics[0]),
            encode_s=timed.seconds["encode"], decode_s=timed.seconds["decode"], skipped=skipped)

    def _current_name(self) -> str:
        if self.current is None:
            raise RuntimeError("no tokenizer loaded: call playground.load(name) first "
                               "(vision_tokenizers.list_tokenizers() lists the names)")
        return self.current

    def __repr__(self) -> str:
        return (f"TokenizerPlayground(device={self.device}, dtype={self.dtype}, loaded={list(self.tokenizers)}, "
                f"current={self.current!r})")


# ---------------------------------------------------------------------------------------------------------------------
# pictures for people: side by side with metrics, zoomed crops, amplified differences


def _font(size: int):
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except Exception:  # no matplotlib or no font file: PIL's own font still renders
        return ImageFont.load_default(size)


def metric_lines(name: str, metrics: dict[str, float], num_tokens: int | None = None,
                 times: tuple[float, float] | None = None) -> list[str]:
    """The caption under a reconstruction: name, quality, rate (and time when given)."""
    def num(key: str, fmt: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else format(value, fmt)

    lines = [name, f"PSNR {num('psnr', '.2f')} dB  SSIM {num('ssim', '.4f')}",
             f"LPIPS {num('lpips', '.4f')}  bpp {num('bpp', '.4g')}"]
    if num_tokens is not None:
        lines[-1] += f"  {num_tokens} tok"
    if times is not None:
        lines.append(f"enc {times[0] * 1e3:.0f} ms  dec {times[1] * 1e3:.0f} ms")
    return lines


def side_by_side(panels: list[tuple[Image.Image, list[str]]], cell: int | None = None) -> Image.Image:
    """One row of images, each scaled to `cell` px (default: the largest, at least 256), its caption lines under it.

    Upscaling uses nearest neighbour so a low-resolution tokenizer's pixels show as they are.
    """
    from PIL import ImageDraw

    cell = cell or max(256, *(max(im.size) for im, _ in panels))
    longest = max((line for _, lines in panels for line in lines), key=len, default="")
    font_size = max(8, cell // 20)
    font = _font(font_size)
    while font_size > 8 and font.getlength(longest) > cell:  # captions fit their column
        font_size -= 1
        font = _font(font_size)
    line_h = font_size + 4
    n_lines = max(len(lines) for _, lines in panels)
    pad = 6
    canvas = Image.new("RGB", (len(panels) * (cell + pad) + pad, cell + 2 * pad + n_lines * line_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (im, lines) in enumerate(panels):
        x = pad + i * (cell + pad)
        resample = Image.Resampling.NEAREST if max(im.size) < cell else Image.Resampling.LANCZOS
        scale = cell / max(im.size)
        shown = im.convert("RGB").resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
        canvas.paste(shown, (x + (cell - shown.width) // 2, pad + (cell - shown.height) // 2))
        for j, line in enumerate(lines):
            draw.text((x, cell + 2 * pad + j * line_h), line, fill="black", font=font)
    return canvas


def zoom_crop(image: np.ndarray, center: tuple[float, float], fraction: float, size: int) -> Image.Image:
    """A square crop (`fraction` of the side) around `center` (x, y in [0,1]), enlarged to `size` px, nearest."""
    h, w = image.shape[:2]
    side = max(4, round(min(h, w) * min(max(fraction, 0.02), 1.0)))
    cx, cy = round(center[0] * w), round(center[1] * h)
    left = min(max(cx - side // 2, 0), w - side)
    top = min(max(cy - side // 2, 0), h - side)
    crop = Image.fromarray(image[top:top + side, left:left + side])
    return crop.resize((size, size), Image.Resampling.NEAREST)


def difference(original: np.ndarray, reconstruction: np.ndarray, gain: float = 4.0) -> Image.Image:
    """|original - reconstruction| per channel times `gain` (clipped), so small errors become visible."""
    diff = np.abs(original.astype(np.int16) - reconstruction.astype(np.int16)).astype(np.float32) * gain
    return Image.fromarray(np.clip(np.round(diff), 0, 255).astype(np.uint8))
