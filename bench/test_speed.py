"""Encode / decode timing with pytest-benchmark: warm-up excluded, device synchronised, one batch per round."""

from __future__ import annotations

import pytest
import torch


def _synchronized(fn, device: torch.device):
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return run


@pytest.mark.speed
@pytest.mark.parametrize("stage", ["encode", "decode"])
def test_speed(benchmark, tokenizer, tokenizer_name, images, stage, request, record, device):
    config = request.config
    resolution = config.getoption("resolution") or tokenizer.resolution
    batch_size = config.getoption("batch_size")
    ids, pixels = next(images.batches(resolution, batch_size))
    pixels = pixels.to(device).float() / 255
    tokens = tokenizer.encode(pixels)
    fn = (lambda: tokenizer.encode(pixels)) if stage == "encode" else (lambda: tokenizer.decode(tokens))
    rounds = max(config.getoption("benchmark_min_rounds", 5), 3)
    benchmark.group = f"{stage} ({len(ids)} images/batch)"
    # --random-weights: the released-size network with random weights (speed only); said in every timing
    random = {"random_weights": True} if getattr(tokenizer, "random_weights", False) else {}
    benchmark.extra_info.update(tokenizer=tokenizer_name, stage=stage, batch_size=len(ids), device=str(device),
                                **random)
    out = benchmark.pedantic(_synchronized(fn, device), rounds=rounds, warmup_rounds=1, iterations=1)
    assert out is not None and out.shape[0] == len(ids)
    if benchmark.stats is not None:  # None under --benchmark-disable
        stats = benchmark.stats.stats
        record.timing(tokenizer=tokenizer_name, stage=stage, batch_size=len(ids), median_s=stats.median,
                      iqr_s=stats.iqr, rounds=stats.rounds, device=str(device), **random)
