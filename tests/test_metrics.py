"""Metrics against independent references: skimage / numpy on real photos, scipy for the Fréchet distance, and the
`lpips` / torchmetrics objects called directly. The LPIPS and FID backbones are randomly initialised files written
into a temporary torch hub dir (the real weights cannot be downloaded here); that tests the plumbing (input scaling,
resize, statistics, file lookup), not the published numbers."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.helpers import save_random_inception, shared_path
from vision_tokenizers import metrics as M

RTOL = 1e-4  # what the brief asks; float64 math agrees far closer (asserted where it matters)


# ----------------------------------------------------------------------------------------------------------------------
# data


def _degrade(arr: np.ndarray, seed: int, quality: int = 25, noise: float = 4.0) -> np.ndarray:
    """JPEG re-encode + Gaussian noise, rounded back to uint8: a plausible 'reconstruction'."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64)
    out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _crop(path: Path, h: int, w: int) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB"))
    y, x = (arr.shape[0] - h) // 2, (arr.shape[1] - w) // 2
    return np.ascontiguousarray(arr[y:y + h, x:x + w])


def _t(arr: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,H,W) uint8."""
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def photo_paths() -> list[Path]:
    return sorted(shared_path("images", "photos").glob("*.jpg")) + sorted(
        shared_path("images", "coco_val2017").glob("*.jpg"))


@pytest.fixture(scope="module")
def pairs(photo_paths) -> list[tuple[np.ndarray, np.ndarray]]:
    """(original, degraded) uint8 HWC crops of real photos, square and non-square."""
    shapes = [(256, 256), (256, 256), (256, 256), (200, 320), (257, 131)]
    out = []
    for i, ((h, w), path) in enumerate(zip(shapes, photo_paths[::3], strict=False)):
        ref = _crop(path, h, w)
        out.append((ref, _degrade(ref, seed=i)))
    return out


@pytest.fixture(scope="module")
def batch(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """The 256x256 pairs as one (B,3,256,256) uint8 batch each."""
    square = [(a, b) for a, b in pairs if a.shape[:2] == (256, 256)]
    return torch.cat([_t(a) for a, _ in square]), torch.cat([_t(b) for _, b in square])


# ----------------------------------------------------------------------------------------------------------------------
# pixel metrics


def test_psnr_mae_rmse_match_skimage_numpy(pairs):
    for ref, rec in pairs:
        r, d = ref.astype(np.float64) / 255, rec.astype(np.float64) / 255
        expected = {
            "psnr": peak_signal_noise_ratio(ref, rec, data_range=255),
            "mae": np.abs(r - d).mean(),
            "rmse": np.sqrt(((r - d) ** 2).mean()),
        }
        for name, value in expected.items():
            ours = float(getattr(M, name)(_t(ref), _t(rec))[0])
            assert ours == pytest.approx(value, rel=1e-10), (name, ref.shape)


def test_ssim_matches_skimage_gaussian_population(pairs):
    for ref, rec in pairs:
        expected = structural_similarity(ref, rec, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255)
        ours = float(M.ssim(_t(ref), _t(rec))[0])
        assert ours == pytest.approx(expected, rel=RTOL), ref.shape
        assert ours == pytest.approx(expected, rel=2e-5), ref.shape  # float32 on CPU: closer than asked
        assert 0.3 < ours < 0.99  # a real degradation, not a degenerate case


def test_ssim_is_rgb_mean_of_per_channel(pairs):
    ref, rec = pairs[0]
    per_channel = [structural_similarity(ref[..., c], rec[..., c], gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255) for c in range(3)]
    assert float(M.ssim(_t(ref), _t(rec))[0]) == pytest.approx(np.mean(per_channel), rel=2e-5)


def test_batch_equals_per_image(batch):
    ref, rec = batch
    for fn in (M.psnr, M.ssim, M.mae, M.rmse):
        together = fn(ref, rec)
        assert together.shape == (ref.shape[0],)
        alone = torch.cat([fn(ref[i:i + 1], rec[i:i + 1]) for i in range(ref.shape[0])])
        torch.testing.assert_close(together, alone, rtol=1e-12, atol=0)


def test_identical_images(batch):
    ref, _ = batch
    assert torch.isinf(M.psnr(ref, ref)).all() and (M.psnr(ref, ref) > 0).all()
    torch.testing.assert_close(M.ssim(ref, ref), torch.ones(ref.shape[0], dtype=torch.float64), rtol=1e-6, atol=0)
    assert (M.mae(ref, ref) == 0).all() and (M.rmse(ref, ref) == 0).all()


def test_data_range_is_fixed_not_inferred(batch):
    """A dark image pair has max < 255: skimage would infer nothing here, but a data-driven range would."""
    ref, rec = batch
    dark_ref, dark_rec = ref // 4, rec // 4
    expected = peak_signal_noise_ratio(dark_ref[0].permute(1, 2, 0).numpy(), dark_rec[0].permute(1, 2, 0).numpy(),
                                       data_range=255)
    assert float(M.psnr(dark_ref[:1], dark_rec[:1])[0]) == pytest.approx(expected, rel=1e-10)


def test_float_inputs_rejected(batch):
    ref, rec = batch
    for fn in (M.psnr, M.ssim, M.mae, M.rmse):
        with pytest.raises(TypeError, match="uint8"):
            fn(ref.float() / 255, rec.float() / 255)
    with pytest.raises(ValueError, match="same shape"):
        M.psnr(ref, rec[:, :, :128])


# ----------------------------------------------------------------------------------------------------------------------
# tokens


def test_token_statistics_uniform_over_four_of_sixteen():
    ids = torch.tensor([0, 5, 9, 15] * 8).view(4, 8)
    stats = M.token_statistics(ids, 16)
    assert stats == {"codebook_usage": 0.25, "unique_codes": 4, "entropy_bits": pytest.approx(2.0),
                     "perplexity": pytest.approx(4.0), "max_entropy_bits": 4.0}


def test_token_statistics_skewed_matches_scipy_and_streams():
    k = 262144  # MAGVIT2's 2**18
    gen = torch.Generator().manual_seed(0)
    ids = (torch.randn(64, 256, generator=gen).abs() * 3000).long().clamp_max(k - 1)
    stats = M.token_statistics(ids, k)
    counts = np.bincount(ids.flatten().numpy(), minlength=k)
    assert stats["unique_codes"] == int((counts > 0).sum())
    assert stats["codebook_usage"] == pytest.approx((counts > 0).sum() / k)
    assert stats["entropy_bits"] == pytest.approx(scipy.stats.entropy(counts, base=2), rel=1e-12)
    assert stats["perplexity"] == pytest.approx(2 ** stats["entropy_bits"])
    assert stats["max_entropy_bits"] == 18.0
    acc = M.TokenStatistics(k)
    for chunk in ids.split(5):
        acc.update(chunk)
    assert acc.num_tokens == ids.numel()
    assert acc.compute() == stats
    a, b = M.TokenStatistics(k), M.TokenStatistics(k)
    a.update(ids[:30])
    b.update(ids[30:])
    a.merge(b)
    assert a.compute() == stats


def test_token_ids_out_of_range_rejected():
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        M.token_statistics(torch.tensor([0, 16]), 16)
    with pytest.raises(TypeError):
        M.TokenStatistics(16).update(torch.tensor([0.0, 1.0]))


def test_bits_per_pixel_magvit2():
    assert M.bits_per_pixel(256, 18, 256, 256) == 0.0703125
    assert M.bits_per_pixel(32, 12, 256, 256) == 32 * 12 / 65536  # TiTok-L-32


# ----------------------------------------------------------------------------------------------------------------------
# Fréchet distance


def _scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's formula: scipy sqrtm of the product."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n", [500, 20])  # full rank, and rank-deficient (n < d) like small-n FID
def test_frechet_distance_matches_scipy_random_gaussians(n):
    rng = np.random.default_rng(n)
    d = 64
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    y = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.8 + 0.3
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    ours = M.frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2), torch.from_numpy(s2))
    assert ours == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-8)
    same = M.frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu1), torch.from_numpy(s1))
    assert abs(same) < 1e-6 * np.trace(s1)


# ----------------------------------------------------------------------------------------------------------------------
# backbones: a fake torch hub with randomly initialised weights


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory) -> Path:
    """A torch hub dir whose checkpoints/ holds random AlexNet and torch-fidelity InceptionV3 weights under the file
    names torchvision and torch-fidelity look for."""
    import torchvision

    hub = tmp_path_factory.mktemp("torch_hub")
    (hub / "checkpoints").mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), hub / "checkpoints" / M.ALEXNET_FILE)
    save_random_inception(hub / "checkpoints" / M.INCEPTION_FILE)
    return hub


@pytest.fixture
def use_hub(monkeypatch):
    """Point torch hub at a directory for one test (restored afterwards)."""
    def use(path: Path) -> None:
        monkeypatch.setattr(torch.hub, "_hub_dir", str(path))  # what torch.hub.set_dir sets
    return use


@pytest.fixture
def no_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


def test_missing_weights_raise_fast_without_download(tmp_path, use_hub, no_download):
    use_hub(tmp_path)
    for factory, filename in ((M.LPIPS, M.ALEXNET_FILE), (M.FID, M.INCEPTION_FILE)):
        start = time.perf_counter()
        with pytest.raises(M.MetricUnavailable) as info:
            factory()
        assert time.perf_counter() - start < 1.0
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / "checkpoints" / filename) in message
        assert "allow_download=False" in message and "copy the file there" in message


def test_missing_weights_offline_download_fails_fast(tmp_path, use_hub, no_download, monkeypatch):
    import vision_tokenizers.weights as W

    use_hub(tmp_path)
    monkeypatch.setattr(W, "host_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(M.MetricUnavailable, match="unreachable"):
        M.LPIPS(allow_download=True)
    with pytest.raises(M.MetricUnavailable, match="unreachable"):
        M.FID(allow_download=True)


def test_corrupt_weights_file_is_unavailable(tmp_path, use_hub):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / M.ALEXNET_FILE).write_bytes(b"not a checkpoint")
    use_hub(tmp_path)
    with pytest.raises(M.MetricUnavailable, match="cannot load"):
        M.LPIPS()


def test_lpips_equals_lpips_package_on_minus_one_one(fake_hub, use_hub, batch):
    import lpips

    use_hub(fake_hub)
    ref, rec = batch
    ours = M.LPIPS()
    direct = lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()
    with torch.no_grad():
        expected = direct(ref.float() / 127.5 - 1, rec.float() / 127.5 - 1).flatten()
        trap = direct(ref.float() / 255, rec.float() / 255).flatten()  # [0,1] fed to a [-1,1] net
    value = ours(ref, rec)
    assert value.shape == (ref.shape[0],)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    assert (value > 0).all()
    assert ((trap - expected).abs() > 0.01 * expected.abs()).all(), "the [0,1] trap is not visible"
    assert (ours(ref, ref) == 0).all()
    alone = torch.cat([ours(ref[i:i + 1], rec[i:i + 1]) for i in range(ref.shape[0])])
    torch.testing.assert_close(value, alone, rtol=1e-5, atol=1e-7)
    assert "net=alex" in ours.backend and "[-1,1]" in ours.mode


@pytest.fixture(scope="module")
def fid_images(photo_paths) -> tuple[torch.Tensor, torch.Tensor]:
    """Three small (original, degraded) pairs: enough for the plumbing (Inception at 299 costs ~1 s/image on CPU)."""
    refs = [_crop(p, 96, 128) for p in photo_paths[1::4][:3]]
    recs = [_degrade(r, seed=10 + i, quality=10, noise=8.0) for i, r in enumerate(refs)]
    return torch.cat([_t(r) for r in refs]), torch.cat([_t(r) for r in recs])


@pytest.fixture(scope="module")
def fid_run(fake_hub, fid_images):
    """Our FID (two shards, merged) and torchmetrics' FrechetInceptionDistance called directly (one pass), on the
    same images and random weights."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    ref, rec = fid_images
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "_hub_dir", str(fake_hub))
        ours, shard = M.FID(), M.FID()
        direct = FrechetInceptionDistance(feature=2048, antialias=False)  # downloads -> finds the cached file
    ours.update(ref[:1], rec[:1])
    shard.update(ref[1:], rec[1:])
    ours.merge(shard)
    direct.update(ref, real=True)
    direct.update(rec, real=False)
    return ours, direct


def test_fid_statistics_equal_torchmetrics(fid_run, fid_images):
    """Also shows `merge`: two shards' statistics equal one pass over everything."""
    ours, direct = fid_run
    ref, _ = fid_images
    assert ours.num_samples == ref.shape[0]
    stats = ours.statistics()
    for key, prefix in (("ref", "real"), ("rec", "fake")):
        n = getattr(direct, f"{prefix}_features_num_samples")
        mu = getattr(direct, f"{prefix}_features_sum") / n
        cov = (getattr(direct, f"{prefix}_features_cov_sum") - n * torch.outer(mu, mu)) / (n - 1)
        torch.testing.assert_close(stats[key][0], mu, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(stats[key][1], cov, rtol=1e-9, atol=1e-9)
        assert float(stats[key][1].diagonal().sum()) > 1e-3  # the random features are not degenerate


@pytest.mark.slow
def test_fid_value_equals_torchmetrics_and_warns_small_n(fid_run):
    """Two 2048x2048 eigendecompositions: ~10-40 s on a CPU."""
    ours, direct = fid_run
    with pytest.warns(UserWarning, match="n=3 < 2048"):
        value = ours.compute()
    expected = float(direct.compute())
    assert math.isfinite(value) and value > 0
    assert value == pytest.approx(expected, rel=1e-5)  # torchmetrics returns float32


def test_fid_features_equal_torch_fidelity(fid_run, fid_images, fake_hub):
    """antialias=False: the same TF1-compatible 299 resize and features as torch-fidelity's own extractor."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    ours, _ = fid_run
    ref, _ = fid_images
    tf = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                     feature_extractor_weights_path=str(fake_hub / "checkpoints" / M.INCEPTION_FILE))
    with torch.no_grad():
        expected = tf(ref[:1])[0]
        got = ours._metric.inception(ref[:1])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert "antialias" in ours.mode and "2048" in ours.mode and "torch-fidelity" in ours.backend


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_distance_matches_scipy_on_fid_statistics(fid_run):
    """Rank-deficient (n=3) Inception statistics; a 256-d marginal keeps scipy's sqrtm fast. sqrtm of a singular
    product is itself only accurate to ~1e-5 (scipy warns), hence the brief's 1e-4 here."""
    ours, _ = fid_run
    (mu1, s1), (mu2, s2) = ours.statistics()["ref"], ours.statistics()["rec"]
    d = slice(0, 256)
    args = (mu1[d], s1[d, d], mu2[d], s2[d, d])
    expected = _scipy_frechet(*(a.numpy() for a in args))
    assert M.frechet_distance(*args) == pytest.approx(expected, rel=RTOL)
