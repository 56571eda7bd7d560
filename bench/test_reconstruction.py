"""Per-image reconstruction quality (PSNR, SSIM, LPIPS, MAE, RMSE, bits per pixel), recorded for every image."""

from __future__ import annotations

import math

import pytest

RANGES = {"psnr": (0.0, math.inf), "ssim": (-1.0, 1.0), "lpips": (0.0, 2.0), "mae": (0.0, 1.0), "rmse": (0.0, 1.0)}


@pytest.mark.quality
def test_reconstruction(evaluation, images, tokenizer_name):
    failed = "; ".join(f"{image_id}: {reason}" for image_id, reason in evaluation.failed.items())
    assert not evaluation.failed, f"{tokenizer_name}: {len(evaluation.failed)} image(s) failed: {failed}"
    readable = len(images.paths) - len(images.bad)
    assert len(evaluation.per_image) == readable, "an image was dropped from the averages"
    for image_id, metrics in evaluation.per_image.items():
        for name, (low, high) in RANGES.items():
            if name in metrics:
                assert low <= metrics[name] <= high, f"{tokenizer_name}/{image_id}: {name}={metrics[name]}"
        assert metrics["bpp"] > 0
        assert metrics["rmse"] >= metrics["mae"] - 1e-9, "RMSE can never be below MAE"
