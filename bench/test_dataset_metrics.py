"""Dataset-level metrics: rFID (merged feature statistics, never averaged per batch), token statistics, bpp."""

from __future__ import annotations

import math

import pytest

from reports.distributed import per_rank_reason


@pytest.fixture
def whole_dataset(request) -> None:
    """Dataset metrics are checked on the whole dataset only: a torchrun rank holds one shard (rank 0's report has
    them, reduced from every rank's per-image statistics)."""
    reason = per_rank_reason(request.config)
    if reason:
        pytest.skip(reason)


@pytest.mark.fid
def test_rfid(whole_dataset, evaluation):
    if "fid" in evaluation.skipped:
        pytest.skip(evaluation.skipped["fid"])
    fid = evaluation.dataset_metrics["fid"]
    assert math.isfinite(fid) and fid >= -1e-6
    assert evaluation.dataset_meta["fid_n"] == len(evaluation.per_image)


@pytest.mark.fid
def test_token_statistics(whole_dataset, evaluation, tokenizer):
    spec = tokenizer.spec
    if spec.kind != "discrete":
        pytest.skip(f"{spec.name} has continuous latents: no codebook to measure")
    stats = evaluation.dataset_metrics
    assert 0 < stats["codebook_usage"] <= 1
    assert 1 <= stats["perplexity"] <= spec.codebook_size + 1e-6
    assert 0 <= stats["entropy_bits"] <= math.log2(spec.codebook_size) + 1e-9


@pytest.mark.fid
def test_bits_per_pixel(evaluation, tokenizer, request):
    if request.config.getoption("resolution"):
        pytest.skip("--resolution overrides the spec's resolution: its bpp no longer applies")
    spec = tokenizer.spec  # the tokenizer's resolution: the spec's, or the painting's own size under --native
    expected = spec.num_tokens * spec.bits_per_token / tokenizer.resolution**2
    assert evaluation.dataset_metrics["bpp"] == pytest.approx(expected)
