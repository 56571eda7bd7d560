"""Benchmark-only fixtures: the metric backbones and one evaluation pass per tokenizer, shared by all bench tests."""

from __future__ import annotations

import warnings

import pytest

from vision_tokenizers import metrics as M
from vision_tokenizers.base import tensor01_to_pil
from vision_tokenizers.evaluate import BatchResult, Evaluation, evaluate


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
    saved = 0

    def store(batch: BatchResult) -> None:
        nonlocal saved
        for i, image_id in enumerate(batch.ids):
            paths = {}
            if save_limit < 0 or saved < save_limit:
                original = f"originals/{resolution}/{image_id}.png"
                if (resolution, image_id) not in _saved_originals:
                    record.save_image(tensor01_to_pil(batch.original[i:i + 1].float() / 255)[0], original)
                    _saved_originals.add((resolution, image_id))
                recon = f"recon/{tokenizer_name}/{image_id}.png"
                record.save_image(tensor01_to_pil(batch.reconstruction[i:i + 1].float() / 255)[0], recon)
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
