"""Known answers for every metric, and one guard per trap in DESIGN.md ("Traps this field keeps falling into").

Known answers: closed forms (constant offsets, flat images, a step edge, shifted / scaled features, a hand-computed
KID), checked on the metric functions and through `evaluate` and the report. Known answers that other files already
assert are not repeated here:
- identical images give PSNR inf, SSIM 1, MAE = RMSE = 0: tests/test_metrics.py::test_identical_images
- LPIPS of an image with itself is 0 (random AlexNet where torchvision looks):
  tests/test_metrics.py::test_lpips_equals_lpips_package_on_minus_one_one
- token statistics, bits per pixel: tests/test_metrics.py::test_token_statistics_uniform_over_four_of_sixteen,
  ::test_bits_per_pixel_magvit2; position entropy: tests/test_uncertainty.py::test_position_entropy_known_answers

Trap -> guard (here unless a file is named):
- LPIPS fed [0,1] instead of [-1,1]; alex vs vgg:
  tests/test_metrics.py::test_lpips_equals_lpips_package_on_minus_one_one (equals the lpips net on x/127.5-1, differs
  from it on [0,1], backend says net=alex)
- SSIM parameters: test_ssim_step_edge_is_wangs_closed_form (skimage's defaults visibly differ),
  test_ssim_of_flat_images_is_the_luminance_formula, test_ssim_of_an_offset_photo_is_its_luminance_term;
  RGB mean, not luma: tests/test_metrics.py::test_ssim_is_rgb_mean_of_per_channel
- PSNR data_range and pooling: test_constant_offset_known_answers (dark images: a data-driven range would differ),
  test_dataset_psnr_is_the_mean_of_per_image_psnr (Evaluation.mean and the report), and
  tests/test_metrics.py::test_data_range_is_fixed_not_inferred
- rounding, not flooring: test_to_uint8_rounds_to_the_nearest_level, test_evaluate_rounds_the_reconstruction;
  saved PNGs: tests/test_reports.py::test_recorder_writes_run_record_first_and_saves_images
- rFID averaged per shard: tests/test_shards.py::test_two_shards_merged_equal_one_run_bit_for_bit ("never the mean of
  shard FIDs"); merge of statistics: tests/test_metrics.py::test_fid_statistics_equal_torchmetrics; backend and mode
  recorded with the number: test_fid_of_identical_images_is_zero_and_carries_backend_and_mode
- VAE posterior sample: test_sd_vae_encodes_the_posterior_mode_never_a_sample, and
  tests/test_sd_vae.py::test_vae_loads_through_real_loader_and_uses_posterior_mode
- timing without warm-up or sync: test_speed_rounds_exclude_the_warm_up (`pytest bench -k speed` on a fake clock),
  test_every_timed_round_ends_with_a_device_sync
- swallowed exceptions drop images: tests/test_failures.py
  (test_exception_on_one_batch_fails_that_batch_and_the_run_goes_on,
  test_nan_output_fails_those_images_and_is_never_averaged, test_out_of_memory_*), bench/test_reconstruction.py (every
  readable image is in the averages); here test_a_bug_in_a_metric_is_raised_not_booked_as_a_model_failure, and a
  perfect reconstruction must not vanish either: test_identical_reconstruction_is_counted_in_the_evaluation,
  test_report_counts_a_perfect_reconstruction, test_a_perfect_reconstruction_passes_a_psnr_gate,
  test_a_perfect_reconstruction_is_resumable
- resizing reconstructions back: test_compared_at_the_tokenizer_resolution_on_the_centre_crop; the encoder's own size:
  tests/test_interface.py::test_range_conversion_and_encoder_resize_are_done_once_by_the_base_class; saved originals
  are the centre crop: tests/test_bench_e2e.py::test_report_files_and_bad_image
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from reports.plugin import Recorder
from tests.helpers import REPO, save_random_inception, shared_path
from vision_tokenizers import metrics as M
from vision_tokenizers.base import BaseTokenizer, to_uint8
from vision_tokenizers.datasets import ImageSet
from vision_tokenizers.evaluate import PIXEL_METRICS, BatchResult, Evaluation, Failure, evaluate
from vision_tokenizers.images import center_crop_resize, load_image
from vision_tokenizers.results import aggregate, reduce_statistics
from vision_tokenizers.results.formatting import metric_cell
from vision_tokenizers.spec import TokenizerSpec
from vision_tokenizers.thresholds import Gate

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # Wang et al.'s constants at data_range 255


# ----------------------------------------------------------------------------------------------------------------------
# a tokenizer with a known error


class Shift(BaseTokenizer):
    """Tokens are the pixels; decoding adds `offsets[i]` gray levels to image i of the batch (plus `bias`, a fraction
    of a level), so every metric of its reconstructions has a closed form."""

    def __init__(self, offsets: list[float], bias: float = 0.0, resolution: int = 32):
        super().__init__(TokenizerSpec("shift", "test", resolution, "continuous", (3, resolution, resolution), 8))
        self.offsets, self.bias = torch.tensor(offsets, dtype=torch.float32), bias

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + (self.offsets[: len(tokens)].view(-1, 1, 1, 1) + self.bias) / 255


def gray(n: int, size: int = 32, high: int = 200, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """(ids, uint8 (n,3,size,size)) random images in [0, high]: room for an offset without clipping."""
    gen = torch.Generator().manual_seed(seed)
    return [f"img{i}" for i in range(n)], torch.randint(0, high + 1, (n, 3, size, size), dtype=torch.uint8,
                                                         generator=gen)


def psnr_of_offset(k: float) -> float:
    return 20 * math.log10(255 / k)


def nchw(arr: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,H,W) uint8."""
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].contiguous()  # a copy: PIL's arrays are read-only


def wang_window() -> np.ndarray:
    """The 11-tap Gaussian (sigma 1.5) of Wang et al., built here independently of the library."""
    i = np.arange(-5, 6)
    g = np.exp(-(i**2) / (2 * 1.5**2))
    return g / g.sum()


# ----------------------------------------------------------------------------------------------------------------------
# pixel metrics: closed forms


@pytest.mark.parametrize("k", [1, 2, 7, 50, 205])
def test_constant_offset_known_answers(k):
    """rec = ref + k gray levels: PSNR = 20 log10(255/k), MAE = RMSE = k/255, exactly. The images are dark (<= 50):
    a data range inferred from the data (max - min) would give another PSNR."""
    _, ref = gray(3, high=50, seed=k)
    rec = ref + k
    expected = torch.full((3,), psnr_of_offset(k), dtype=torch.float64)
    torch.testing.assert_close(M.psnr(ref, rec), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(M.mae(ref, rec), torch.full((3,), k / 255, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(M.rmse(ref, rec), torch.full((3,), k / 255, dtype=torch.float64), rtol=1e-12, atol=0)
    assert float(M.psnr(torch.zeros_like(ref), torch.full_like(ref, 255))[0]) == 0.0  # the full range: 0 dB


@pytest.mark.parametrize(("a", "b"), [(100, 110), (30, 200), (0, 255), (128, 128)])
def test_ssim_of_flat_images_is_the_luminance_formula(a, b):
    """No structure: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2."""
    x, y = torch.full((1, 3, 16, 16), a, dtype=torch.uint8), torch.full((1, 3, 16, 16), b, dtype=torch.uint8)
    # float32 on the CPU (see metrics.ssim): 0 vs 255 agrees to 1.7e-5, the brief's 1e-4 elsewhere
    assert float(M.ssim(x, y)[0]) == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-4)


def test_ssim_step_edge_is_wangs_closed_form():
    """A flat image against the same image with a horizontal step of d levels. Along a row of window centres the
    Gaussian tail G beyond the edge gives mu = a + dG, var = d^2 G(1-G), cov = 0, so each window's SSIM is
    (2a mu + C1)/(a^2 + mu^2 + C1) * C2/(var + C2), averaged over the valid rows. skimage with Wang's settings agrees;
    skimage's defaults (7x7 uniform window, sample covariance) do not: the trap is visible on this pair."""
    a, d, size = 100, 60, 32
    g, offsets = wang_window(), np.arange(-5, 6)
    per_row = []
    for centre in range(5, size - 5):
        tail = g[centre + offsets >= size // 2].sum()
        mu, var = a + d * tail, d * d * tail * (1 - tail)
        per_row.append((2 * a * mu + C1) / (a * a + mu * mu + C1) * C2 / (var + C2))
    expected = float(np.mean(per_row))
    x = np.full((size, size, 3), a, dtype=np.uint8)
    y = x.copy()
    y[size // 2:] += d
    assert float(M.ssim(nchw(x), nchw(y))[0]) == pytest.approx(expected, rel=2e-5)
    wang = structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)
    assert wang == pytest.approx(expected, rel=1e-9)
    defaults = structural_similarity(x, y, channel_axis=-1, data_range=255)
    assert abs(defaults - expected) > 0.03, "skimage's defaults should not give Wang's number here"


def test_ssim_of_an_offset_photo_is_its_luminance_term():
    """A real photo against itself + k levels: variances and covariance are equal, so the contrast-structure term is
    exactly 1 and SSIM is the mean over valid windows (and channels) of (2 mu (mu+k) + C1)/(mu^2 + (mu+k)^2 + C1),
    mu the Gaussian local mean, computed here with numpy."""
    photo = center_crop_resize(load_image(sorted(shared_path("images", "coco_val2017").glob("*.jpg"))[0]), 96)
    x = np.asarray(photo) // 2  # <= 127: no clipping after the offset
    k = 40
    g = wang_window()
    terms = []
    for c in range(3):
        rows = np.apply_along_axis(np.convolve, 0, x[..., c].astype(np.float64), g, mode="valid")
        mu = np.apply_along_axis(np.convolve, 1, rows, g, mode="valid")
        terms.append(((2 * mu * (mu + k) + C1) / (mu**2 + (mu + k) ** 2 + C1)).mean())
    expected = float(np.mean(terms))
    assert expected < 0.99  # the offset is visible
    ours = float(M.ssim(nchw(x), nchw(x + k))[0])
    assert ours == pytest.approx(expected, rel=2e-5)
    assert ours == pytest.approx(structural_similarity(x, x + k, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                                       use_sample_covariance=False, data_range=255), rel=2e-5)


# ----------------------------------------------------------------------------------------------------------------------
# the 8-bit boundary


def test_to_uint8_rounds_to_the_nearest_level():
    k = torch.arange(256, dtype=torch.float32)
    assert torch.equal(to_uint8(k / 255), k.to(torch.uint8))
    assert torch.equal(to_uint8((k[:-1] + 0.6) / 255), (k[:-1] + 1).to(torch.uint8))
    assert torch.equal(to_uint8((k[1:] - 0.4) / 255), k[1:].to(torch.uint8))  # a network's 'just below' output
    floored = ((k[1:] - 0.4) / 255 * 255).to(torch.uint8)
    assert torch.equal(floored, (k[1:] - 1).to(torch.uint8)), "the flooring cast the trap is about"
    assert torch.equal(to_uint8(torch.tensor([-0.2, 1.3])), torch.tensor([0, 255], dtype=torch.uint8))


@pytest.mark.parametrize(("bias", "expected"), [(-0.4, math.inf), (0.6, psnr_of_offset(1))])
def test_evaluate_rounds_the_reconstruction(bias, expected):
    """A decoder that lands 0.4 of a level below every original is a perfect 8-bit copy (flooring would charge it one
    level everywhere, 48.13 dB); 0.6 above is one level off everywhere."""
    ids, pixels = gray(2)
    result = evaluate(Shift([0, 0], bias=bias), [(ids, pixels)])
    assert result.values("psnr") == [expected, expected]


# ----------------------------------------------------------------------------------------------------------------------
# dataset numbers: mean of per-image values; a perfect reconstruction is counted, never dropped


def test_dataset_psnr_is_the_mean_of_per_image_psnr(tmp_path):
    """Offsets of 1 and 16 levels: the dataset PSNR is the mean of 48.13 and 24.08 dB, not the PSNR of the pooled
    MSE (10 log10(255^2 / 128.5) = 27.04 dB); the same number in `Evaluation.mean` and in the report."""
    ids, pixels = gray(2)
    result = evaluate(Shift([1, 16]), [(ids, pixels)])
    expected = (psnr_of_offset(1) + psnr_of_offset(16)) / 2
    pooled = 10 * math.log10(255**2 / ((1 + 16**2) / 2))
    assert result.mean("psnr") == pytest.approx(expected, rel=1e-12)
    assert abs(expected - pooled) > 1.0
    recorder = Recorder(tmp_path / "r")
    for image_id, metrics in result.per_image.items():
        recorder.image("shift", image_id, metrics, resolution=32)
    report = aggregate(tmp_path / "r")["tokenizers"]["shift"]
    assert report["metrics"]["psnr"]["mean"] == pytest.approx(expected, rel=1e-12)
    assert report["metrics"]["mae"]["mean"] == pytest.approx(8.5 / 255, rel=1e-12)
    assert "mean of per-image PSNR" in M.describe(None, None)["psnr"]["dataset"]


def test_identical_reconstruction_is_counted_in_the_evaluation():
    """One perfect copy and one 4-level offset: both images are in the evaluation (PSNR inf and 36.09 dB); the mean
    is over the finite values, the infinite one countable from `values`."""
    ids, pixels = gray(2)
    result = evaluate(Shift([0, 4]), [(ids, pixels)])
    assert list(result.per_image) == ids
    assert result.per_image["img0"]["psnr"] == math.inf and result.per_image["img0"]["ssim"] == pytest.approx(1.0)
    assert result.per_image["img0"]["mae"] == 0 and result.per_image["img0"]["rmse"] == 0
    assert sum(math.isinf(v) for v in result.values("psnr")) == 1
    assert result.mean("psnr") == pytest.approx(psnr_of_offset(4), rel=1e-12)


@pytest.fixture
def perfect_run(tmp_path) -> tuple[Recorder, Evaluation]:
    """The records of two tokenizers as the benchmark writes them (`record.image` with the evaluation's metrics):
    'half' copies one image of two perfectly, 'perfect' both."""
    ids, pixels = gray(2)
    recorder = Recorder(tmp_path / "r")
    for name, offsets in (("half", [0, 4]), ("perfect", [0, 0])):
        result = evaluate(Shift(offsets), [(ids, pixels)])
        for image_id, metrics in result.per_image.items():
            recorder.image(name, image_id, metrics, resolution=32)
    return recorder, result


def test_report_counts_a_perfect_reconstruction(perfect_run):
    """metrics.describe promises 'mean of per-image PSNR; inf counted apart'. The report must show the infinite PSNR
    as counted (`n_nonfinite`), and a tokenizer whose every image is perfect must not read 'not measured'."""
    recorder, _ = perfect_run
    tokenizers = aggregate(recorder.report_dir)["tokenizers"]
    half = tokenizers["half"]
    assert half["n_images"] == 2
    assert half["metrics"]["psnr"]["mean"] == pytest.approx(psnr_of_offset(4), rel=1e-12)
    assert half["metrics"]["psnr"].get("n_nonfinite") == 1, (
        f"the perfect copy vanished from the PSNR statistics: {half['metrics']['psnr']}")
    perfect = tokenizers["perfect"]
    assert "psnr" in perfect["metrics"], f"PSNR of a perfect tokenizer reads {metric_cell(perfect, 'psnr')!r}"


def test_a_perfect_reconstruction_is_resumable(perfect_run):
    """A rerun into the same report dir must not recompute (and append again) the images it copied perfectly."""
    recorder, _ = perfect_run
    assert recorder.completed_images("half", ["psnr", "ssim"]) == {"img0", "img1"}


def test_a_perfect_reconstruction_passes_a_psnr_gate(perfect_run):
    """bench/test_thresholds.py gates on `Evaluation.mean`: a tokenizer that copies every image exactly passes any
    PSNR floor."""
    _, perfect = perfect_run
    assert perfect.values("psnr") == [math.inf, math.inf]
    assert Gate("perfect", "psnr", 30.0, "min").check(perfect.mean("psnr")) is None


def test_a_bug_in_a_metric_is_raised_not_booked_as_a_model_failure(monkeypatch):
    """evaluate's contract: a model failure costs its batch; 'exceptions outside the model (metrics, storage)
    propagate: they are bugs'. A metric that raises must stop the pass, not be reported as the tokenizer's failure."""
    def broken(ref, rec):
        raise ZeroDivisionError("planted bug in a metric")

    monkeypatch.setitem(PIXEL_METRICS, "ssim", broken)
    ids, pixels = gray(2)
    failures: list[Failure] = []
    with pytest.raises(ZeroDivisionError, match="planted bug"):
        evaluate(Shift([0, 4]), [(ids, pixels)], on_failure=failures.append)
    assert failures == []


# ----------------------------------------------------------------------------------------------------------------------
# resolution: compared at the tokenizer's size, on the centre crop


class Painter(BaseTokenizer):
    """Encodes at `encoder_resolution`, paints `out` pixels a side (nearest upsampling of what it saw)."""

    def __init__(self, out: int):
        super().__init__(TokenizerSpec("painter", "test", 64, "continuous", (3, 32, 32), 8, encoder_resolution=32,
                                       encoder_resize="bilinear-antialias"))
        self.out = out

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.interpolate(tokens, size=(self.out, self.out), mode="nearest")


def test_compared_at_the_tokenizer_resolution_on_the_centre_crop():
    path = sorted(shared_path("images", "photos").glob("*.jpg"))[0]
    assert load_image(path).width != load_image(path).height  # a non-square photo
    ids, pixels = next(ImageSet("one", [path]).batches(64, 1))
    crop = np.asarray(center_crop_resize(load_image(path), 64))
    assert pixels.shape == (1, 3, 64, 64) and torch.equal(pixels[0], nchw(crop)[0])
    seen: list[BatchResult] = []
    result = evaluate(Painter(out=64), [(ids, pixels)], on_batch=seen.append)
    batch = seen[0]
    assert torch.equal(batch.original, pixels), "the original compared is the centre crop at the tokenizer's size"
    assert batch.reconstruction.shape == (1, 3, 64, 64)
    assert result.per_image[ids[0]]["psnr"] == pytest.approx(float(M.psnr(pixels, batch.reconstruction)[0]))
    assert math.isfinite(result.per_image[ids[0]]["psnr"])  # the 32 px bottleneck costs something

    failures: list[Failure] = []
    with pytest.warns(UserWarning, match="differs from input"):
        native = evaluate(Painter(out=128), [(ids, pixels)], on_failure=failures.append)
    assert not native.per_image, "a reconstruction of another size is never resized to fit"
    assert [f.ids for f in failures] == [ids]
    assert "(1, 3, 128, 128) differs from input (1, 3, 64, 64)" in failures[0].reason


# ----------------------------------------------------------------------------------------------------------------------
# Fréchet distance and KID: closed forms


@pytest.mark.parametrize(("n", "dim"), [(40, 8), (10, 64)])  # the Gaussian path and the n < dim path
def test_frechet_distance_of_shifted_and_scaled_features(n, dim):
    """rec = ref + c: FID = |c|^2 (same covariance). rec = mean + s (ref - mean): FID = (1 - s)^2 tr(sigma)."""
    ref = torch.from_numpy(np.random.default_rng(n).normal(size=(n, dim)) @ np.diag(np.linspace(0.5, 2.0, dim)))
    c = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)
    assert M.fid_from_features(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert M.fid_from_features(ref, ref + c) == pytest.approx(float(c @ c), rel=1e-9)
    mean, s = ref.mean(0), 0.7
    trace = float(torch.cov(ref.t()).trace())
    assert M.fid_from_features(ref, mean + s * (ref - mean)) == pytest.approx((1 - s) ** 2 * trace, rel=1e-9)
    sigma = torch.cov(ref.t())
    rel = 1e-9 if n >= dim else 1e-5  # eigvals of a singular product: ~1e-5, as metrics.frechet_distance documents
    assert M.frechet_distance(mean, sigma, mean + c, s * s * sigma) == pytest.approx(
        float(c @ c) + (1 - s) ** 2 * trace, rel=rel)


def test_kid_of_a_hand_computed_case():
    """Features {0, 1} (d = 1) on both sides, kernel (xy + 1)^3: K = [[1, 1], [1, 8]]. Unbiased MMD^2 =
    (off-diagonal K_xx + K_yy) / (m(m-1)) - 2 sum K_xy / m^2 = (2 + 2)/2 - 2 * 11/4 = -3.5: not 0 for identical sets
    (the unbiased estimator), and exactly this number."""
    features = torch.tensor([[0.0], [1.0]])
    assert M.kid_from_features(features, features) == (pytest.approx(-3.5, rel=1e-12), 0.0, 2)


@pytest.fixture(scope="module")
def inception(tmp_path_factory) -> Path:
    return save_random_inception(tmp_path_factory.mktemp("inception") / M.INCEPTION_FILE)


def test_fid_of_identical_images_is_zero_and_carries_backend_and_mode(inception):
    """A perfect copy of two real photos through `evaluate` with the FID object (random InceptionV3), reduced as the
    benchmark and `reports merge` do (`reduce_statistics` of the per-image features): both sides' features and
    statistics are equal bit for bit and rFID is 0; the protocol record carries the backend and the mode, the
    dataset meta n. (`FID.compute` is not called: its 2048x2048 eigendecomposition costs 3-15 s on this CPU.)"""
    paths = sorted(shared_path("images", "coco_val2017").glob("*.jpg"))[:2]
    ids, pixels = next(ImageSet("two", paths).batches(64, 2))
    fid = M.FID(weights_path=inception, min_samples_warning=None)
    seen: list[BatchResult] = []
    evaluate(Shift([0, 0], resolution=64), [(ids, pixels)], fid=fid, on_batch=seen.append, reduce=False)
    ref, rec = seen[0].statistics["fid_ref"], seen[0].statistics["fid_rec"]
    assert ref.shape == (2, 2048) and torch.equal(ref, rec)
    stats = fid.statistics()
    assert torch.equal(stats["ref"][0], stats["rec"][0]) and torch.equal(stats["ref"][1], stats["rec"][1])
    trace = float(stats["ref"][1].trace())
    assert trace > 1e-3, "degenerate random features would make the zero meaningless"
    per_image = {i: {"fid_ref": ref[k].numpy(), "fid_rec": rec[k].numpy()} for k, i in enumerate(ids)}
    metrics, meta = reduce_statistics(per_image)
    assert abs(metrics["fid"]) <= 1e-9 * trace
    assert meta["fid_n"] == 2 and meta["fid_dim"] == 2048
    recorded = M.describe(None, fid)["fid"]
    assert (recorded["backend"], recorded["mode"]) == (fid.backend, fid.mode)
    assert "InceptionV3" in fid.backend and "299" in fid.mode and "antialias" in fid.mode


# ----------------------------------------------------------------------------------------------------------------------
# VAE: the posterior mode


def test_sd_vae_encodes_the_posterior_mode_never_a_sample(tmp_path, monkeypatch):
    """A tiny diffusers AutoencoderKL saved like the hub release and built through `sd_vae.build`, fp32 and 8-bit:
    `sample()` is never called (it would make runs irreproducible), two encodes are identical, and the latents are
    the posterior mode."""
    from diffusers import AutoencoderKL
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from vision_tokenizers import sd_vae
    from vision_tokenizers.registry import get_spec

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                        layers_per_block=1, sample_size=32).eval()
    vae.save_pretrained(tmp_path / "vae")

    def no_sampling(self, generator=None):
        raise AssertionError("posterior.sample() called: latents must be the mode")

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", no_sampling)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mode = vae.encode(x * 2 - 1).latent_dist.mode()
    files = {"config.json": tmp_path / "vae" / "config.json"}
    for name in ("vae_sd_mse_512", "vae_sd_mse_q8_512"):
        spec = dataclasses.replace(get_spec(name), name=f"{name}_tiny32", resolution=32, token_shape=(4, 16, 16))
        tok = sd_vae.build(spec, files, torch.device("cpu"), torch.float32)
        first, second = tok.encode(x), tok.encode(x)
        assert torch.equal(first, second), name
        expected = mode if name == "vae_sd_mse_512" else sd_vae.quantize_latents(mode * vae.config.scaling_factor)
        torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
        ids = ["a", "b"]
        runs = [evaluate(tok, [(ids, to_uint8(x))]).per_image for _ in range(2)]
        assert runs[0] == runs[1], f"{name}: two passes gave different numbers"


# ----------------------------------------------------------------------------------------------------------------------
# timing


def test_every_timed_round_ends_with_a_device_sync(monkeypatch):
    """The function pytest-benchmark times waits for the GPU's queued work before the clock stops (CUDA calls return
    before the kernels finish); on the CPU there is nothing to wait for."""
    from bench.test_speed import _synchronized

    events: list = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(("sync", str(device))))

    def work():
        events.append("work")
        return "out"

    assert _synchronized(work, torch.device("cuda", 0))() == "out"
    assert events == ["work", ("sync", "cuda:0")]
    events.clear()
    assert _synchronized(work, torch.device("cpu"))() == "out" and events == ["work"]


FAKE_CLOCK = '''
"""pytest-benchmark's timer, moved only by the tokenizer: the first two model calls of each test cost 1000 s (a cold
model: setup and warm-up), every later call 1 s. Logs each test's model calls."""
import json
import os

import vision_tokenizers.magvit2 as family

_now, _calls = 0.0, 0


def now():
    return _now


def _charged(original):
    def run(self, *args, **kwargs):
        global _now, _calls
        _calls += 1
        out = original(self, *args, **kwargs)
        _now += 1000.0 if _calls <= 2 else 1.0
        return out
    return run


family.Magvit2._encode = _charged(family.Magvit2._encode)
family.Magvit2._decode = _charged(family.Magvit2._decode)


def pytest_runtest_setup(item):
    global _calls
    _calls = 0


def pytest_runtest_teardown(item):
    with open(os.environ["FAKE_CLOCK_LOG"], "a") as fh:
        fh.write(json.dumps({"test": item.name, "model_calls": _calls}) + "\\n")
'''


def test_speed_rounds_exclude_the_warm_up(tmp_path):
    """`pytest bench -k speed` on the tiny MAGVIT2 and one image, timed by a fake clock: every round measures exactly
    one model call (1 s), the cold calls (setup encode, one warm-up) are outside the rounds, and the JSON and the
    timing record say so."""
    (tmp_path / "fake_clock.py").write_text(textwrap.dedent(FAKE_CLOCK))
    data = tmp_path / "images"
    data.mkdir()
    first = sorted(shared_path("images", "coco_val2017").glob("*.jpg"))[0]
    (data / first.name).write_bytes(first.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", FAKE_CLOCK_LOG=str(tmp_path / "calls.jsonl"))
    rounds = 3
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "-p", "fake_clock", "-k", "speed", "-q",
         "--tokenizers", "magvit2_tiny", "--weights-dir", str(shared_path("golden")), "--offline",
         "--dataset", str(data), "--report-dir", str(tmp_path / "report"), "--benchmark-timer", "fake_clock.now",
         "--benchmark-min-rounds", str(rounds), "--benchmark-json", str(tmp_path / "bench.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    benchmarks = {b["name"]: b for b in json.loads((tmp_path / "bench.json").read_text())["benchmarks"]}
    assert set(benchmarks) == {"test_speed[magvit2_tiny-encode]", "test_speed[magvit2_tiny-decode]"}
    for name, bench in benchmarks.items():
        stats = bench["stats"]
        assert stats["rounds"] == rounds and stats["iterations"] == 1, name
        assert stats["min"] == stats["max"] == stats["median"] == 1.0, f"{name}: a cold call was timed: {stats}"
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert {c["test"]: c["model_calls"] for c in calls} == dict.fromkeys(benchmarks, 2 + rounds), \
        "setup + one warm-up call outside the rounds"
    timings = [json.loads(line) for line in (tmp_path / "report" / "records.jsonl").read_text().splitlines()
               if '"type":"timing"' in line]
    assert sorted((t["stage"], t["median_s"], t["iqr_s"], t["rounds"]) for t in timings) == [
        ("decode", 1.0, 0.0, rounds), ("encode", 1.0, 0.0, rounds)]
