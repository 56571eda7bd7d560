"""The registered TA-Tok + AR-DTok tokenizer end to end: the whole upstream chain through `vision_tokenizers.load`,
seeded per-image sampling, the shared encoder, and the benchmark on the tiny golden checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import vision_tokenizers as vt
from tests.helpers import shared_path
from vision_tokenizers.base import image_generators
from vision_tokenizers.components import release_components


@pytest.fixture(scope="module")
def golden():
    return load_file(str(shared_path("golden", "tatok_ardtok", "io.safetensors")))


def tiny(**settings):
    return vt.load("tatok_ardtok_tiny", weights_dir=shared_path("golden"), offline=True, settings=settings)


def test_chain_reproduces_upstream_mmautoencoder(golden):
    """`MMAutoEncoder.forward(x, {'cfg_scale': 4.0, 'top_k': 1})` with TA-Tok deterministic, via our registry."""
    tok = tiny(cfg_scale=4.0, top_k=1)
    image = golden["input.image_56"]
    ids = tok.encode(image)
    assert torch.equal(ids, golden["chain.tatok_indices"].long())
    out = tok.decode(ids, image_generators(0, ["a", "b"]))
    assert torch.equal(tok.aux_tokens()["ar"][0].long(), golden["chain.ar_codes"].long())
    torch.testing.assert_close(out, golden["chain.decoded_01"].float().clamp(0, 1), atol=1e-4, rtol=0)  # ours clamps
    truncated = (out * 255).to(torch.uint8).permute(0, 2, 3, 1)  # upstream truncates; the benchmark rounds
    assert (truncated.int() - golden["chain.image_uint8"].int()).abs().max() <= 1


def test_settings_are_the_published_comparisons_and_upstream_is_a_preset():
    spec = vt.get_spec("tatok_ardtok_512")
    assert spec.settings == {"cfg_scale": 1.0, "temperature": 1.0, "top_k": 200, "top_p": 1.0, "quantizer": "argmax"}
    assert spec.resolved_settings("upstream")["top_k"] == 0
    assert spec.num_tokens == 729 and spec.encoder_resolution == 384 and spec.resolution == 512
    assert vt.get_spec("tatok_ardtok_512_p169").num_tokens == 169
    assert vt.get_spec("tatok_ardtok_512_p81").num_tokens == 81
    assert spec.bits_per_pixel == pytest.approx(729 * 16 / 512**2)


def test_sampling_is_seeded_per_image_and_the_encoder_is_shared(golden):
    release_components()
    a, b = tiny(), tiny(top_k=0)
    assert a.encoder is b.encoder, "one TA-Tok encoder per run, keyed by its file"
    ids = a.encode(golden["input.image_56"])
    first = a.decode(ids, image_generators(3, ["x", "y"]))
    codes = a.aux_tokens()["ar"][0]
    again = a.decode(ids[1:], image_generators(3, ["y"]))
    assert torch.equal(a.aux_tokens()["ar"][0], codes[1:]), "a row's codes do not depend on the batch"
    assert (first[1:] - again).abs().max() < 1e-4
    a.decode(ids, image_generators(4, ["x", "y"]))
    assert not torch.equal(a.aux_tokens()["ar"][0], codes), "another run seed samples other codes"


def test_missing_weights_skip_with_one_line(tmp_path):
    with pytest.raises(vt.WeightsUnavailable) as info:
        vt.load("tatok_ardtok_512", weights_dir=tmp_path, offline=True)
    message = str(info.value)
    assert "\n" not in message and "ta_tok.pth" in message and "csuhan/TA-Tok" in message


def test_tiny_chain_runs_through_the_whole_benchmark(tmp_path):
    from tests.test_bench_e2e import run_bench
    from vision_tokenizers.base import image_seed
    from vision_tokenizers.results import read_records

    report = tmp_path / "report"
    proc = run_bench("--tokenizers", "tatok_ardtok_tiny,tatok_sana_tiny", "--weights-dir", str(shared_path("golden")),
                     "--offline",
                     "--dataset", str(shared_path("images", "coco_val2017")), "--num-images", "2", "--seed", "5",
                     "--report-dir", str(report), "--gen", "top_k=5")
    assert proc.returncode == 0, proc.stdout[-3000:]
    records = read_records(report)
    images = [r for r in records if r["type"] == "image"]
    assert len(images) == 4 and all(r["seed"] == image_seed(5, r["image_id"]) for r in images)
    assert {r["tokenizer"] for r in images} == {"tatok_ardtok_tiny", "tatok_sana_tiny"}
    dataset = next(r for r in records if r["type"] == "dataset" and r["tokenizer"] == "tatok_ardtok_tiny")
    assert dataset["meta"]["settings"]["top_k"] == 5
    assert 0 < dataset["metrics"]["ar_codebook_usage"] <= 1 and dataset["metrics"]["codebook_usage"] > 0
    facts = next(r for r in records if r["type"] == "tokenizer" and r["tokenizer"] == "tatok_ardtok_tiny")
    spec = vt.get_spec("tatok_ardtok_tiny")
    assert facts["facts"]["encoder_resolution"] == spec.encoder_resolution and len(facts["weights"]) == 3
    assert all(len(w["sha256"]) == 64 for w in facts["weights"].values())
    assert (report / "grid.png").is_file() and "tatok_ardtok_tiny" in (report / "summary.md").read_text()


def test_sana_chain_feeds_the_encoders_decoder_features_to_sana(golden):
    tok = vt.load("tatok_sana_tiny", weights_dir=shared_path("golden"), offline=True)
    assert tok.settings == {"steps": 4, "guidance_scale": 1.0}
    ids = tok.encode(golden["input.image_56"])
    assert torch.equal(ids, golden["tatok.indices"].long())
    ours = tok.decode(ids, image_generators(1, ["a", "b"]))
    features = tok.encoder.decode_from_indices(ids)
    features = features.repeat(1, 1, tok.sana.caption_channels // features.shape[-1])  # the tiny spec's tiling
    direct = tok.sana.generate(features, steps=4, guidance_scale=1.0, generator=image_generators(1, ["a", "b"]))
    torch.testing.assert_close(ours, direct.clamp(0, 1), atol=1e-5, rtol=0)
    assert ours.shape == (2, 3, 512, 512)
    assert vt.get_spec("tatok_sana_512").resolved_settings("upstream")["steps"] == 28


def test_lumina2_chain_paints_from_decoder_features_and_downscales_like_the_published_comparison(golden):
    from PIL import Image

    from vision_tokenizers.base import pil_to_tensor01, tensor01_to_pil

    tok = vt.load("tatok_lumina2_tiny", weights_dir=shared_path("golden"), offline=True)
    ids = tok.encode(golden["input.image_64"])
    ours = tok.decode(ids, image_generators(2, ["a", "b"]))
    assert ours.shape == (2, 3, 64, 64) and tok.resolution == 64
    features = tok.encoder.decode_from_indices(ids)
    features = features.repeat(1, 1, tok.lumina.cond_in_channels // features.shape[-1])  # the tiny spec's tiling
    painted = tok.lumina.generate(features, steps=3, time_shift=6.0, resolution=128,
                                  generator=image_generators(2, ["a", "b"]))
    lanczos = pil_to_tensor01([im.resize((64, 64), Image.Resampling.LANCZOS) for im in tensor01_to_pil(painted)])
    assert (ours - lanczos).abs().max() <= 1 / 255 + 1e-6
    native = vt.load("tatok_lumina2_tiny", weights_dir=shared_path("golden"), offline=True,
                     settings={"native": True})
    assert native.resolution == 128
    assert native.decode(ids, image_generators(2, ["a", "b"])).shape == (2, 3, 128, 128)


def test_gated_dependencies_say_how_to_log_in(tmp_path):
    with pytest.raises(vt.WeightsUnavailable) as info:
        vt.load("tatok_lumina2_512", weights_dir=tmp_path, offline=True)
    message = str(info.value)
    assert "\n" not in message and "google/gemma-2-2b" in message and "huggingface-cli login" in message
    assert f"{tmp_path}/gemma-2-2b/" in message and f"{tmp_path}/tatok/" in message


def test_step_sweep_runs_each_value_and_plots_quality_against_steps(tmp_path):
    from tests.test_bench_e2e import run_bench
    from vision_tokenizers.results import read_records

    report = tmp_path / "report"
    proc = run_bench("--tokenizers", "tatok_sana_tiny,magvit2_tiny", "--sweep", "steps=1,2",
                     "--weights-dir", str(shared_path("golden")), "--offline", "--benchmark-disable",
                     "--dataset", str(shared_path("images", "coco_val2017")), "--num-images", "2",
                     "--report-dir", str(report), "-v")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "test_reconstruction[tatok_sana_tiny@steps=1] PASSED" in proc.stdout
    assert "test_reconstruction[magvit2_tiny] PASSED" in proc.stdout, "tokenizers without the setting run once"
    records = read_records(report)
    settings = {r["tokenizer"]: r["meta"]["settings"].get("steps") for r in records if r["type"] == "dataset"}
    assert settings == {"tatok_sana_tiny@steps=1": 1, "tatok_sana_tiny@steps=2": 2, "magvit2_tiny": None}
    assert (report / "quality_vs_steps.png").stat().st_size > 10_000
    assert "quality_vs_steps.png" in (report / "summary.md").read_text()


def test_upstream_quantizer_samples_per_image_from_the_run_seed(golden):
    """`quantizer=sample` (preset upstream) draws each image's ids from its own generator, not the global RNG."""
    from vision_tokenizers.evaluate import evaluate

    tok = vt.load("tatok_ardtok_tiny", weights_dir=shared_path("golden"), offline=True, preset="upstream")
    image = torch.nn.functional.interpolate(golden["input.image_56"], size=(128, 128), mode="bilinear")
    pixels = (image * 255).round().to(torch.uint8)
    runs = []
    for batch_size in (1, 2):
        tokens: dict[str, torch.Tensor] = {}
        batches = [(["a", "b"][i:i + batch_size], pixels[i:i + batch_size]) for i in range(0, 2, batch_size)]
        torch.manual_seed(batch_size)  # a different global RNG state each time: must not matter
        evaluate(tok, batches, run_seed=9, on_batch=lambda b, out=tokens: out.update(zip(b.ids, b.tokens, strict=True)))
        runs.append(tokens)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in ("a", "b"))
    plain = vt.load("tatok_ardtok_tiny", weights_dir=shared_path("golden"), offline=True)
    argmax = plain.encode(pixels.float() / 255)
    assert not torch.equal(torch.stack([runs[0]["a"], runs[0]["b"]]), argmax), "sampling, not argmax"


def test_lumina2_nan_painting_stays_nan_through_the_lanczos_step(monkeypatch):
    tok = vt.load("tatok_lumina2_tiny", weights_dir=shared_path("golden"), offline=True)
    real = tok.lumina.generate

    def first_row_nan(*args, **kwargs):
        out = real(*args, **kwargs).clone()
        out[0] = torch.nan
        return out

    monkeypatch.setattr(tok.lumina, "generate", first_row_nan)
    ids = tok.encode(torch.rand(2, 3, 64, 64))
    out = tok.decode(ids, image_generators(0, ["a", "b"]))
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()


def test_bf16_encode_on_cpu_resizes_in_float32():
    tok = vt.load("tatok_ardtok_tiny", weights_dir=shared_path("golden"), offline=True, dtype="bf16")
    ids = tok.encode(torch.rand(2, 3, 128, 128))  # 128 -> 56 antialiased resize: no bf16 kernel on the CPU
    assert ids.shape == (2, 16) and ids.dtype == torch.int64
