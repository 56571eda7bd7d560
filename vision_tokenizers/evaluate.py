"""One pass of a tokenizer over a dataset: reconstruct every batch and measure it.

Plain functions, no pytest: the benchmark, the CLI and the playground all call `evaluate`. Metrics are computed on
the device, on the 8-bit images a user would save (both sides rounded to uint8), at the tokenizer's resolution.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
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
    # per-image statistics (batch-first, CPU) that a resumed or sharded run stores and merges exactly: "fid_ref" /
    # "fid_rec" Inception features, "ids" (discrete tokens), "aux_<name>" de-tokenizer codes; see `_statistics`
    statistics: dict[str, torch.Tensor] = field(default_factory=dict)
    codebooks: dict[str, int] = field(default_factory=dict)  # statistic name -> codebook size (ids only)
    text: list[dict | None] | None = None  # per-image OCR details (text fidelity), when a text hook measured them


@dataclass
class Evaluation:
    tokenizer: str
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    dataset_metrics: dict[str, float] = field(default_factory=dict)
    dataset_meta: dict[str, object] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason
    failed: dict[str, str] = field(default_factory=dict)  # image id -> why the model could not reconstruct it
    text: dict[str, dict] = field(default_factory=dict)  # image id -> OCR details, when a text hook measured them

    def values(self, metric: str) -> list[float]:
        return [m[metric] for m in self.per_image.values() if metric in m]

    def mean(self, metric: str) -> float:
        """Mean over finite values; +inf (every image a perfect copy, PSNR) when only +inf values exist; else NaN.
        Infinite values are counted apart in the report (`n_nonfinite`), never averaged in."""
        values = self.values(metric)
        vals = [v for v in values if math.isfinite(v)]
        if vals:
            return sum(vals) / len(vals)
        return math.inf if values and all(v == math.inf for v in values) else float("nan")


def _statistics(spec, batch: BatchResult, aux: dict, features: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Fill `batch.statistics` / `batch.codebooks` with what each image adds to the dataset metrics."""
    if features is not None:
        batch.statistics.update(fid_ref=features[0], fid_rec=features[1])
    if spec.kind == "discrete" and spec.codebook_size and not batch.tokens.is_floating_point():
        batch.statistics["ids"], batch.codebooks["ids"] = batch.tokens.detach().cpu(), spec.codebook_size
    for name, (codes, size) in aux.items():
        if len(codes) == len(batch.ids):  # only codes that are per image can be stored per image
            batch.statistics[f"aux_{name}"], batch.codebooks[f"aux_{name}"] = codes.detach().cpu(), size


# (image id, uint8 original (3,H,W), uint8 reconstruction (3,H,W)) -> (per-image metrics, details) or None: a metric
# measured image by image outside the batched ones (text fidelity: OCR of the image's annotated boxes).
ImageHook = Callable[[str, torch.Tensor, torch.Tensor], "tuple[dict[str, float], dict] | None"]


def _measure_text(batch: BatchResult, hook: ImageHook) -> None:
    """Run `hook` on every image of a reconstructed batch: its metrics join the image's row, its details
    `batch.text`."""
    batch.text = []
    for i, image_id in enumerate(batch.ids):
        out = hook(image_id, batch.original[i], batch.reconstruction[i])
        if out is not None:
            batch.metrics[i].update(out[0])
        batch.text.append(None if out is None else out[1])


def bits_per_pixel(tokens: torch.Tensor, bits_per_token: float, height: int, width: int) -> float:
    """Storage of one image's tokens (tokens[0]) per input pixel."""
    return M.bits_per_pixel(tokens[0].numel(), bits_per_token, height, width)


def evaluate(tokenizer, batches: Iterable[tuple[list[str], torch.Tensor]], *, lpips: M.LPIPS | None = None,
             fid: M.FID | None = None, on_batch: Callable[[BatchResult], None] | None = None,
             run_seed: int = 0, on_failure: Callable[[Failure], None] | None = None,
             reduce: bool = True, text: ImageHook | None = None) -> Evaluation:
    """Reconstruct every (ids, uint8 pixels) batch; per-image metrics, rFID and token statistics.

    A sampling de-tokenizer decodes each image with its own generator seeded from (run_seed, image id), so its
    numbers do not depend on batch size or order. A batch whose model call fails is reported (`on_failure`, a
    warning, `Evaluation.failed`) and the pass goes on with the next one; see `_reconstruct_or_report`. What
    `on_batch` already stored is kept. Exceptions outside the model (metrics, storage) propagate: they are bugs.
    `reduce=False` leaves the dataset metrics to the caller, who reduces the per-image `BatchResult.statistics`
    (the benchmark does, so that resumed runs and merged shards give the same bits). `text`: a per-image hook (text
    fidelity) run on every reconstructed image before `on_batch`; see `ImageHook`.
    """
    spec = tokenizer.spec
    result = Evaluation(spec.name)
    # running statistics only when reducing here; with reduce=False the caller reduces `BatchResult.statistics`
    token_stats = M.TokenStatistics(spec.codebook_size) \
        if reduce and spec.kind == "discrete" and spec.codebook_size else None
    aux_stats: dict[str, M.TokenStatistics] = {}  # codes a de-tokenizer generated on the way (e.g. AR-DTok's)

    def report(failure: Failure) -> None:
        result.failed.update(dict.fromkeys(failure.ids, failure.reason))
        warnings.warn(f"{spec.name}: {failure.kind} {', '.join(failure.ids)} failed: {failure.reason}", UserWarning,
                      stacklevel=3)
        if on_failure is not None:
            on_failure(failure)

    for ids, pixels_u8 in batches:
        for batch, aux in _reconstruct_or_report(tokenizer, ids, pixels_u8, lpips, run_seed, report):
            if text is not None:
                _measure_text(batch, text)
                result.text.update((i, d) for i, d in zip(batch.ids, batch.text, strict=True) if d is not None)
            if token_stats is not None:
                token_stats.update(batch.tokens)
            for name, (codes, size) in aux.items() if reduce else ():
                aux_stats.setdefault(name, M.TokenStatistics(size)).update(codes)
            features = fid.update(batch.original, batch.reconstruction) if fid is not None else None
            _statistics(spec, batch, aux, features)
            result.per_image.update(zip(batch.ids, batch.metrics, strict=True))
            if on_batch is not None:
                on_batch(batch)
    if not reduce:
        return result
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


# --------------------------------------------------------------------------------------------- failing model calls
# An exception inside the model fails its batch, not the run; CUDA out-of-memory retries at half the batch size down
# to 1; a non-finite reconstruction fails its image only. Failed images are never measured, so never averaged.

Aux = dict[str, tuple[torch.Tensor, int]]


@dataclass
class Failure:
    """Images a tokenizer could not reconstruct: `kind` "batch" (the model call raised) or "image" (its output had
    NaN / Inf). `reason` is one line."""

    kind: str
    ids: list[str]
    reason: str


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class _ModelOutput:
    original: torch.Tensor
    tokens: torch.Tensor
    reconstruction: torch.Tensor
    seeds: list[int] | None
    aux: Aux
    finite: list[bool]


def _run_model(tokenizer, ids: list[str], pixels_u8: torch.Tensor, run_seed: int) -> _ModelOutput:
    """One model call on one batch (encode, seeded decode, 8-bit rounding): everything that may fail as a model."""
    spec = tokenizer.spec
    original = pixels_u8.to(tokenizer.device)
    # an encoder that samples (TA-Tok's quantizer=sample) draws from its own per-image stream, apart from decoding's
    encode_generators = image_generators(run_seed, [f"{i}#encode" for i in ids], tokenizer.device) \
        if tokenizer.samples_on_encode else None
    tokens = tokenizer.encode(original.float() / 255, encode_generators)
    seeds = [image_seed(run_seed, i) for i in ids] if spec.stochastic else None
    generators = image_generators(run_seed, ids, tokenizer.device) if spec.stochastic else None
    decoded = tokenizer.decode(tokens, generators)
    finite = torch.isfinite(decoded.float()).flatten(1).all(1)
    if tokens.is_floating_point():
        finite &= torch.isfinite(tokens.float()).flatten(1).all(1).to(finite.device)
    reconstruction = to_uint8(decoded)
    if reconstruction.shape != original.shape:
        raise RuntimeError(f"{spec.name}: reconstruction {tuple(reconstruction.shape)} differs from input "
                           f"{tuple(original.shape)}")
    aux = dict(tokenizer.aux_tokens() or {})
    return _ModelOutput(original, tokens, reconstruction, seeds, aux, finite.tolist())


def _measure(spec, ids: list[str], out: _ModelOutput, lpips: M.LPIPS | None) -> BatchResult:
    """Per-image metrics of one reconstructed batch. Outside the model's try: an exception here is our bug."""
    columns = {name: fn(out.original, out.reconstruction) for name, fn in PIXEL_METRICS.items()}
    if lpips is not None:
        columns["lpips"] = lpips(out.original, out.reconstruction)
    bpp = bits_per_pixel(out.tokens, spec.bits_per_token, *out.original.shape[-2:])
    rows = [{name: float(col[i]) for name, col in columns.items()} | {"bpp": bpp} for i in range(len(ids))]
    return BatchResult(ids, out.original, out.reconstruction, out.tokens, rows, out.seeds)


def _keep(batch: BatchResult, aux: Aux, keep: list[bool]) -> tuple[BatchResult, Aux]:
    """The images of a batch whose output was finite (and their share of the de-tokenizer's codes)."""
    index = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t[index.to(t.device)]

    subset = BatchResult([i for i, k in zip(batch.ids, keep, strict=True) if k], pick(batch.original),
                         pick(batch.reconstruction), pick(batch.tokens),
                         [m for m, k in zip(batch.metrics, keep, strict=True) if k],
                         None if batch.seeds is None else [s for s, k in zip(batch.seeds, keep, strict=True) if k])
    return subset, {name: (pick(codes) if len(codes) == len(keep) else codes, size)
                    for name, (codes, size) in aux.items()}


def _reconstruct_or_report(tokenizer, ids: list[str], pixels_u8: torch.Tensor, lpips: M.LPIPS | None, run_seed: int,
                           report: Callable[[Failure], None]) -> Iterator[tuple[BatchResult, Aux]]:
    """Yield the parts of one batch that reconstructed; `report` the rest."""
    try:
        out = _run_model(tokenizer, ids, pixels_u8, run_seed)
        out_of_memory = False
    except torch.cuda.OutOfMemoryError as exc:
        out_of_memory, reason = True, _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - any failure inside the model costs this batch only; it is reported
        report(Failure("batch", list(ids), _one_line(exc)))
        return
    if out_of_memory:  # retried outside the `except`, so that the traceback no longer holds the batch's tensors
        if len(ids) == 1:
            report(Failure("batch", list(ids), f"CUDA out of memory even at batch size 1 ({reason}); use a "
                                               "smaller --resolution or a device with more memory"))
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = (len(ids) + 1) // 2
        warnings.warn(f"{tokenizer.spec.name}: CUDA out of memory on a batch of {len(ids)}; retrying as batches "
                      f"of {half} (lower --batch-size to avoid this)", UserWarning, stacklevel=2)
        for part in (slice(0, half), slice(half, None)):
            yield from _reconstruct_or_report(tokenizer, ids[part], pixels_u8[part], lpips, run_seed, report)
        return
    batch, aux, finite = _measure(tokenizer.spec, ids, out, lpips), out.aux, out.finite
    if not all(finite):
        bad = [i for i, ok in zip(ids, finite, strict=True) if not ok]
        report(Failure("image", bad, "non-finite reconstruction (NaN/Inf in the model's output); never averaged"))
        if not any(finite):
            return
        batch, aux = _keep(batch, aux, finite)
    yield batch, aux
