"""Benchmark-only fixtures, each doing one thing: metric backbones, a progress bar, one evaluation pass per tokenizer.

Resuming is one query on the results store (`record.recorded_evaluation`), file naming belongs to the recorder
(`record.image(recon=..., original=...)`), and rFID is one session metric reset for every tokenizer.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import pytest

from vision_tokenizers import metrics as M
from vision_tokenizers.evaluate import PIXEL_METRICS, BatchResult, Evaluation, evaluate


def _metric_or_skip(factory, what: str, record, device, offline: bool):
    try:
        return factory(device=device, allow_download=not offline), None
    except M.MetricUnavailable as exc:
        record.skip(tokenizer=None, what=f"metric:{what}", reason=str(exc))
        return None, str(exc)


@pytest.fixture(scope="session")
def lpips_metric(record, device, request):
    """(LPIPS or None, reason it is unavailable)."""
    return _metric_or_skip(M.LPIPS, "lpips", record, device, request.config.getoption("offline"))


@pytest.fixture(scope="session")
def fid_metric(record, device, request):
    """(FID or None, reason it is unavailable): one Inception network per session, reset for every tokenizer."""
    return _metric_or_skip(M.FID, "fid", record, device, request.config.getoption("offline"))


@pytest.fixture(scope="session")
def progress(request):
    """`progress(name, total)` -> a context manager yielding `advance(n)`: a per-tokenizer bar (images/s, ETA) drawn
    on the terminal around pytest's capture; off when stderr is not a terminal or under CI."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    @contextlib.contextmanager
    def bar(name: str, total: int):
        suspend = capman.global_and_fixture_disabled if capman else contextlib.nullcontext
        with suspend():
            enabled = sys.stderr.isatty() and not os.environ.get("CI")
        if not enabled:
            yield lambda n: None
            return
        from tqdm import tqdm

        with suspend():
            pbar = tqdm(total=total, desc=name, unit="img", leave=False, file=sys.stderr)

        def advance(n: int) -> None:
            with suspend():
                pbar.update(n)
        try:
            yield advance
        finally:
            with suspend():
                pbar.close()
    return bar


@pytest.fixture(scope="session")
def evaluation(tokenizer, tokenizer_name, images, request, record, lpips_metric, fid_metric, progress) -> Evaluation:
    """Reconstruct the whole dataset once per tokenizer; every image is recorded as soon as its batch is done."""
    config = request.config
    resolution = config.getoption("resolution") or tokenizer.resolution
    save_limit = config.getoption("save_images")
    (lpips, lpips_reason), (fid, fid_reason) = lpips_metric, fid_metric
    ids, _ = images.at_resolution(resolution)
    for image_id, reason in images.bad.items():
        warnings.warn(reason, UserWarning, stacklevel=1)  # one line per unreadable file; the run goes on
        record.skip(tokenizer=tokenizer_name, what="image", reason=reason, image_id=image_id)
    if not ids:
        pytest.fail(f"no readable image in dataset {images.name}: {len(images.bad)} unreadable, "
                    f"{len(images.paths)} files")
    skipped = {k: v for k, v in (("lpips", lpips_reason), ("fid", fid_reason)) if v}
    resumed = record.recorded_evaluation(
        tokenizer_name, dataset=images.name, resolution=resolution, ids=ids,
        image_metrics=[*PIXEL_METRICS, "bpp"] + (["lpips"] if lpips else []),
        dataset_metrics=["bpp"] + (["fid"] if fid else []), settings=tokenizer.settings)
    if resumed is not None:
        warnings.warn(f"{tokenizer_name}: resumed {len(ids)} images from {record.report_dir}", UserWarning,
                      stacklevel=1)
        per_image, dataset_record = resumed
        return Evaluation(tokenizer_name, per_image=per_image, dataset_metrics=dict(dataset_record["metrics"]),
                          dataset_meta=dict(dataset_record["meta"]), skipped=skipped)
    if fid is not None:
        fid.reset()
    saved = 0

    with progress(tokenizer_name, len(ids)) as advance:
        def store(batch: BatchResult) -> None:
            nonlocal saved
            for i, image_id in enumerate(batch.ids):
                pictures = {}
                if save_limit < 0 or saved < save_limit:
                    pictures = {"recon": batch.reconstruction[i], "original": batch.original[i]}
                    saved += 1
                seed = {"seed": batch.seeds[i]} if batch.seeds is not None else {}
                record.image(tokenizer=tokenizer_name, image_id=image_id, dataset=images.name, resolution=resolution,
                             metrics=batch.metrics[i], **pictures, **seed)
            advance(len(batch.ids))

        result = evaluate(tokenizer, images.batches(resolution, config.getoption("batch_size")), lpips=lpips,
                          fid=fid, on_batch=store, run_seed=config.getoption("seed"))
    result.skipped.update(skipped)
    record.dataset(tokenizer=tokenizer_name, metrics=result.dataset_metrics,
                   meta={**result.dataset_meta, "n": len(result.per_image), "dataset": images.name,
                         "resolution": resolution, "settings": tokenizer.settings})
    return result
