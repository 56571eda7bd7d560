"""One pass of a tokenizer over a dataset: reconstruct every batch and measure it.

Plain functions, no pytest: the benchmark, the CLI and the playground all call `evaluate`. Metrics are computed on
the device, on the 8-bit images a user would save (both sides rounded to uint8), at the tokenizer's resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from vision_tokenizers import metrics as M
from vision_tokenizers.base import image_generators, image_seed, to_uint8

PIXEL_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "psnr": M.psnr, "ssim": M.ssim, "mae": M.mae, "rmse": M.rmse,
}


@dataclass
class BatchResult:
    ids: list[str]
    original: torch.Tensor          # uint8 (B,3,H,W)
    reconstruction: torch.Tensor    # uint8 (B,3,H,W)
    tokens: torch.Tensor
    metrics: list[dict[str, float]]  # one dict per image
    seeds: list[int] | None = None   # per-image sampling seeds of a stochastic de-tokenizer


@dataclass
class Evaluation:
    tokenizer: str
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    dataset_metrics: dict[str, float] = field(default_factory=dict)
    dataset_meta: dict[str, object] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason

    def values(self, metric: str) -> list[float]:
        return [m[metric] for m in self.per_image.values() if metric in m]

    def mean(self, metric: str) -> float:
        vals = [v for v in self.values(metric) if math.isfinite(v)]
        return sum(vals) / len(vals) if vals else float("nan")


def bits_per_pixel(tokens: torch.Tensor, bits_per_token: float, height: int, width: int) -> float:
    """Storage of one image's tokens (tokens[0]) per input pixel."""
    return M.bits_per_pixel(tokens[0].numel(), bits_per_token, height, width)


def evaluate(tokenizer, batches: Iterable[tuple[list[str], torch.Tensor]], *, lpips: M.LPIPS | None = None,
             fid: M.FID | None = None, on_batch: Callable[[BatchResult], None] | None = None,
             run_seed: int = 0) -> Evaluation:
    """Reconstruct every (ids, uint8 pixels) batch; per-image metrics, rFID and token statistics.

    A sampling de-tokenizer decodes each image with its own generator seeded from (run_seed, image id), so its
    numbers do not depend on batch size or order. Exceptions are not swallowed: a failing batch stops the pass,
    and what `on_batch` already stored is kept.
    """
    spec = tokenizer.spec
    result = Evaluation(spec.name)
    token_stats = M.TokenStatistics(spec.codebook_size) if spec.kind == "discrete" and spec.codebook_size else None
    aux_stats: dict[str, M.TokenStatistics] = {}  # codes a de-tokenizer generated on the way (e.g. AR-DTok's)
    for ids, pixels_u8 in batches:
        original = pixels_u8.to(tokenizer.device)
        tokens = tokenizer.encode(original.float() / 255)
        seeds = [image_seed(run_seed, i) for i in ids] if spec.stochastic else None
        generators = image_generators(run_seed, ids, tokenizer.device) if spec.stochastic else None
        reconstruction = to_uint8(tokenizer.decode(tokens, generators))
        if reconstruction.shape != original.shape:
            raise RuntimeError(f"{spec.name}: reconstruction {tuple(reconstruction.shape)} differs from input "
                               f"{tuple(original.shape)}")
        columns = {name: fn(original, reconstruction) for name, fn in PIXEL_METRICS.items()}
        if lpips is not None:
            columns["lpips"] = lpips(original, reconstruction)
        bpp = bits_per_pixel(tokens, spec.bits_per_token, *original.shape[-2:])
        rows = [{name: float(col[i]) for name, col in columns.items()} | {"bpp": bpp} for i in range(len(ids))]
        if token_stats is not None:
            token_stats.update(tokens)
        for name, (codes, size) in (getattr(tokenizer, "aux_tokens", dict)() or {}).items():
            aux_stats.setdefault(name, M.TokenStatistics(size)).update(codes)
        if fid is not None:
            fid.update(original, reconstruction)
        result.per_image.update(zip(ids, rows, strict=True))
        if on_batch is not None:
            on_batch(BatchResult(ids, original, reconstruction, tokens, rows, seeds))
    if result.per_image:
        result.dataset_metrics["bpp"] = next(iter(result.per_image.values()))["bpp"]
    if token_stats is not None and result.per_image:
        result.dataset_metrics.update(token_stats.compute())
    for name, stats in aux_stats.items():
        result.dataset_metrics.update({f"{name}_{k}": v for k, v in stats.compute().items()})
    if fid is not None and result.per_image:
        result.dataset_metrics["fid"] = fid.compute()
        result.dataset_meta.update(fid_backend=fid.backend, fid_mode=fid.mode, fid_n=len(result.per_image))
    return result
