"""--random-weights: released-size networks with random weights and no files, for speed without weights.

Parameter counts are checked on the meta device (no memory, no init) against the counts of the released
architectures in the golden folders (or the released weight files where they are here); the benchmark runs
end to end once, on CPU, with one full-size network at a small input size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, shared_path
from vision_tokenizers import WeightsUnavailable, list_tokenizers, load
from vision_tokenizers.random_weights import RandomWeightsUnsupported, parameter_count, supports_random_weights
from vision_tokenizers.results import read_records
from vision_tokenizers.spec import TokenizerSpec

SUPPORTED = {"vae_sd_mse_512", "vae_sd_mse_q8_512", "taef2_512", "magvit2_256", "titok_l32_256", "tatok_ardtok_512",
             "tatok_ardtok_256", "tatok_ardtok_1024", "tatok_ardtok_512_p169", "tatok_ardtok_512_p81"}
# diffusers' AutoencoderKL built from stabilityai/sd-vae-ft-mse's config.json: the SD 1.x VAE's 83.65 M parameters.
SD_VAE_PARAMS = 83_653_863


def _golden(*parts: str) -> dict:
    return json.loads(shared_path("golden", *parts).read_text())


def test_which_tokenizers_have_a_released_size_config():
    assert {n for n in list_tokenizers() if supports_random_weights(n)} == SUPPORTED


def _released_count(name: str) -> int:
    if name == "magvit2_256":
        return _golden("magvit2", "full_size_256.json")["facts"]["param_counts"]["encoder+decoder+quantize"]
    if name == "titok_l32_256":
        return _golden("titok", "l32_layout.json")["num_parameters"]
    if name.startswith("vae_sd_mse"):
        return SD_VAE_PARAMS
    if name == "taef2_512":  # the released files themselves
        files = sorted(shared_path("weights", "taesd").glob("taef2_*.pth"))
        assert len(files) == 2
        return sum(t.numel() for f in files for t in torch.load(f, map_location="cpu", weights_only=True).values())
    counts = _golden("tatok_ardtok", "full_size_params.json")
    px = {"tatok_ardtok_256": 256, "tatok_ardtok_1024": 1024}.get(name, 512)  # pooled variants: the 512 px files
    return counts["ta_tok"]["total"] + counts[f"ar_dtok_lp_{px}px"]["total"] + counts["llamagen_vq16"]["total"]


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_parameter_count_is_the_released_architectures(name):
    tok = load(name, device="meta", random_weights=True)
    assert tok.random_weights and tok.weight_files == {}
    assert parameter_count(tok) == _released_count(name)


def test_no_file_is_read_and_the_weights_are_seeded(monkeypatch, tmp_path):
    import vision_tokenizers.registry as registry

    def no_files(*args, **kwargs):
        raise AssertionError("--random-weights must not look for weight files")

    monkeypatch.setattr(registry, "resolve_weights", no_files)
    before = torch.get_rng_state()
    first = load("taef2_512", random_weights=True, weights_dir=tmp_path, offline=True)
    second = load("taef2_512", random_weights=True, weights_dir=tmp_path, offline=True)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is untouched
    for a, b in zip(first.decoder.parameters(), second.decoder.parameters(), strict=True):
        assert not a.is_meta and torch.isfinite(a).all() and torch.equal(a, b)
    out = first.decode(first.encode(torch.rand(1, 3, 32, 32)))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_without_a_released_size_config_it_is_a_skip_reason():
    for name in ("tatok_sana_512", "tatok_lumina2_512", "titok_tiny"):
        with pytest.raises(RandomWeightsUnsupported, match="no released-size config for random weights") as info:
            load(name, random_weights=True)
        assert isinstance(info.value, WeightsUnavailable)  # what the benchmark turns into a skip


def test_a_registration_without_a_random_builder_is_unsupported():
    from vision_tokenizers.registry import REGISTRY

    spec = TokenizerSpec(name="plugin_like_rw", family="x", resolution=64, kind="discrete", token_shape=(4,),
                         bits_per_token=4, random_config={})
    with REGISTRY.replaced(spec, build=lambda *a: pytest.fail("the weights builder must not run")):
        with pytest.raises(RandomWeightsUnsupported):
            load("plugin_like_rw", random_weights=True)
        assert not supports_random_weights("plugin_like_rw")


@pytest.mark.slow
def test_benchmark_times_a_full_size_network_without_weights(tmp_path):
    """`pytest bench --random-weights -m speed`: pytest-benchmark JSON with encode and decode of the released-size
    MAGVIT2 (at 32 px to stay fast on CPU), timings marked random_weights, no quality record, an empty weights folder,
    and the tokenizer without a released-size config skipped with its reason."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    (tmp_path / "no_weights").mkdir()
    report, out = tmp_path / "report", tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "--random-weights", "-m", "speed",
         "--tokenizers", "magvit2_256,magvit2_tiny", "--resolution", "32", "--num-images", "1", "--batch-size", "1",
         "--benchmark-min-rounds", "1", "--weights-dir", str(tmp_path / "no_weights"), "--offline",
         "--report-dir", str(report), "--benchmark-json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.count("quality tests deselected (--random-weights") == 1
    assert "magvit2_tiny: no released-size config for random weights" in proc.stdout
    assert not any((tmp_path / "no_weights").iterdir())

    benchmarks = json.loads(out.read_text())["benchmarks"]
    assert {b["extra_info"]["stage"] for b in benchmarks} == {"encode", "decode"}
    assert all(b["extra_info"]["tokenizer"] == "magvit2_256" and b["extra_info"]["random_weights"] is True
               and b["stats"]["median"] > 0 for b in benchmarks)

    records = read_records(report)
    timings = [r for r in records if r["type"] == "timing"]
    assert {r["stage"] for r in timings} == {"encode", "decode"} and all(r["random_weights"] for r in timings)
    assert not [r for r in records if r["type"] in ("image", "dataset", "seed_image")]
    tokenizer = next(r for r in records if r["type"] == "tokenizer")
    assert tokenizer["random_weights"] is True and tokenizer["weights"] == {}
    summary = (report / "summary.md").read_text()
    assert "`cpu`, random weights" in summary and "no quality number is computed" in summary
