"""Benchmark-only fixtures: the metric backbones and one evaluation pass per tokenizer, shared by all bench tests."""

from __future__ import annotations

import warnings

import pytest

from vision_tokenizers import metrics as M
from vision_tokenizers.evaluate import PIXEL_METRICS, BatchResult, Evaluation, evaluate
from vision_tokenizers.results import read_records


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


def resume_evaluation(report_dir, tokenizer_name: str, dataset: str, resolution: int, ids: list[str],
                      image_metrics: list[str], dataset_metrics: list[str]) -> Evaluation | None:
    """The evaluation already recorded in `report_dir` for exactly these images, or None if anything is missing.

    A rerun into the same --report-dir does not reconstruct a tokenizer again once all its image records and its
    dataset record (same dataset, resolution and n, with every metric now computable) are there.
    """
    if not report_dir.is_dir():
        return None
    images: dict[str, dict] = {}
    dataset_record = None
    for rec in read_records(report_dir):
        if rec.get("tokenizer") != tokenizer_name:
            continue
        if rec.get("type") == "image" and rec.get("dataset") == dataset and rec.get("resolution") == resolution:
            images[rec["image_id"]] = rec.get("metrics") or {}
        meta = rec.get("meta") or {}
        if rec.get("type") == "dataset" and (meta.get("dataset"), meta.get("resolution"), meta.get("n")) == (
                dataset, resolution, len(ids)):
            dataset_record = rec
    if dataset_record is None or any(
            i not in images or any(images[i].get(m) is None for m in image_metrics) for i in ids):
        return None
    if any(dataset_record["metrics"].get(m) is None for m in dataset_metrics):
        return None
    return Evaluation(tokenizer_name, per_image={i: images[i] for i in ids},
                      dataset_metrics=dict(dataset_record["metrics"]), dataset_meta=dict(dataset_record["meta"]))


@pytest.fixture(scope="session")
def _saved_originals() -> set[tuple[int, str]]:
    return set()


@pytest.fixture(scope="session")
def evaluation(tokenizer, tokenizer_name, images, request, record, device, lpips_metric,
               _saved_originals) -> Evaluation:
    """Reconstruct the whole dataset once per tokenizer; every image is recorded as soon as its batch is done."""
    config = request.config
    resolution = config.getoption("resolution") or tokenizer.resolution
    save_limit = config.getoption("save_images")
    lpips, lpips_reason = lpips_metric
    fid, fid_reason = _metric_or_skip(M.FID, "fid", record, device, config.getoption("offline"))
    ids, _ = images.at_resolution(resolution)
    for reason in images.bad.values():
        warnings.warn(reason, UserWarning, stacklevel=1)  # one line per unreadable file; the run goes on
        record.skip(tokenizer=tokenizer_name, what="image", reason=reason)
    if not ids:
        pytest.fail(f"no readable image in dataset {images.name}: {len(images.bad)} unreadable, "
                    f"{len(images.paths)} files")
    needed = [*PIXEL_METRICS, "bpp"] + (["lpips"] if lpips else [])
    resumed = resume_evaluation(record.report_dir, tokenizer_name, images.name, resolution, ids, needed,
                                ["bpp"] + (["fid"] if fid else []))
    if resumed is not None:
        warnings.warn(f"{tokenizer_name}: resumed {len(ids)} images from {record.report_dir}", UserWarning,
                      stacklevel=1)
        resumed.skipped.update({k: v for k, v in (("lpips", lpips_reason), ("fid", fid_reason)) if v})
        return resumed
    saved = 0

    def store(batch: BatchResult) -> None:
        nonlocal saved
        for i, image_id in enumerate(batch.ids):
            paths = {}
            if save_limit < 0 or saved < save_limit:
                original = f"originals/{resolution}/{image_id}.png"
                if (resolution, image_id) not in _saved_originals:
                    record.save_image(batch.original[i], original)  # uint8 CHW, saved as is
                    _saved_originals.add((resolution, image_id))
                recon = f"recon/{tokenizer_name}/{image_id}.png"
                record.save_image(batch.reconstruction[i], recon)
                paths = {"original": original, "recon": recon}
                saved += 1
            record.image(tokenizer=tokenizer_name, image_id=image_id, dataset=images.name, resolution=resolution,
                         metrics=batch.metrics[i], **paths)

    result = evaluate(tokenizer, images.batches(resolution, config.getoption("batch_size")), lpips=lpips, fid=fid,
                      on_batch=store)
    if lpips_reason:
        result.skipped["lpips"] = lpips_reason
    if fid_reason:
        result.skipped["fid"] = fid_reason
    record.dataset(tokenizer=tokenizer_name, metrics=result.dataset_metrics,
                   meta={**result.dataset_meta, "n": len(result.per_image), "dataset": images.name,
                         "resolution": resolution})
    return result
