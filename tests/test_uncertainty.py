"""Uncertainty and analysis of the numbers: bootstrap intervals, KID, FID from per-image features, token analysis
(per-position entropy, measured bits per pixel, the 8-bit latent pair) and the worst-case views. Model-free."""

from __future__ import annotations

import csv
import math
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import REPO
from tests.test_shards import bench_command, bench_env, dataset_folder
from vision_tokenizers import metrics as M
from vision_tokenizers import results as R
from vision_tokenizers.results.grids import WorstTracker, worst_rows
from vision_tokenizers.results.reducer import StatisticsReducer
from vision_tokenizers.results.stats import reduce_statistics, reduce_stored_statistics, save_image_stats
from vision_tokenizers.results.uncertainty import add_intervals, add_seed_spread, bootstrap_ci

# ----------------------------------------------------------------------------------------------- bootstrap intervals


def test_bootstrap_interval_is_seeded_and_has_the_textbook_width():
    values = np.random.default_rng(1).normal(0.0, 1.0, 400)
    low, high = bootstrap_ci(values, 2000)
    assert (low, high) == bootstrap_ci(values, 2000), "seeded: a rebuild gives the same interval"
    assert low < values.mean() < high
    # the normal-theory 95 % half-width of a mean of 400 unit-variance values is 1.96 / 20
    assert (high - low) / 2 == pytest.approx(1.96 * values.std(ddof=1) / 20, rel=0.15)
    assert bootstrap_ci(values[:1], 100) is None and bootstrap_ci(values, 0) is None


def test_intervals_do_not_depend_on_record_order():
    """Values are resampled in sorted image-id order: merged shards and resumed runs list images in other orders."""
    rows = [{"tokenizer": "t", "image_id": f"img{i:02d}", "metrics": {"psnr": 20.0 + (i * 7) % 5}} for i in range(12)]

    def report(order):
        return {"images": order, "tokenizers": {"t": {"metrics": {"psnr": {"mean": 0.0}}}}}

    a, b = report(list(rows)), report(random.Random(3).sample(rows, len(rows)))
    add_intervals(a, 500)
    add_intervals(b, 500)
    assert a["tokenizers"]["t"]["metrics"]["psnr"]["ci_low"] == b["tokenizers"]["t"]["metrics"]["psnr"]["ci_low"]
    assert a["tokenizers"]["t"]["metrics"]["psnr"]["ci_high"] == b["tokenizers"]["t"]["metrics"]["psnr"]["ci_high"]
    assert a["bootstrap"]["resamples"] == 500


# ------------------------------------------------------------------------------------------------------ FID and KID


def _features(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, dim, generator=g, dtype=torch.float64) * 2 + shift).float()


@pytest.mark.parametrize(("n", "dim"), [(6, 64), (40, 16)])
def test_fid_from_features_equals_the_frechet_distance_of_the_statistics(n, dim):
    """n < dim takes the nuclear-norm route (O(n^2 d)), n >= dim the covariance route: both are the same quantity."""
    ref, rec = _features(n, dim, 0), _features(n, dim, 1, shift=0.3)
    expected = M.frechet_distance(*M.gaussian_from_statistics(*M.feature_statistics(ref)),
                                  *M.gaussian_from_statistics(*M.feature_statistics(rec)))
    assert M.fid_from_features(ref, rec) == pytest.approx(expected, rel=1e-7, abs=1e-9)
    assert abs(M.fid_from_features(ref, ref)) < 1e-9, "identical feature sets: FID 0"
    assert M.fid_from_features(ref, rec) > 0.1
    with pytest.raises(ValueError, match="at least 2 images"):
        M.fid_from_features(ref[:1], rec[:1])


def test_feature_statistics_equal_torchmetrics_running_sums():
    x = _features(300, 8, 2)
    n, total, outer = M.feature_statistics(x)
    d = x.double()
    assert n == 300
    torch.testing.assert_close(total, d.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outer, d.t().mm(d), rtol=1e-12, atol=1e-10)


def test_kid_matches_torchmetrics_poly_mmd_and_is_seeded():
    from torchmetrics.image.kid import poly_mmd

    ref, rec = _features(20, 32, 3).double(), _features(20, 32, 4, shift=0.2).double()
    mean, std, size = M.kid_from_features(ref, rec)
    assert size == 20 and std == 0.0, "subset size n: one subset, the whole set"
    assert mean == pytest.approx(float(poly_mmd(ref, rec)), rel=1e-12)
    sub = M.kid_from_features(ref, rec, subset_size=8, subsets=30)
    assert sub == M.kid_from_features(ref, rec, subset_size=8, subsets=30) and sub[1] > 0 and sub[2] == 8
    # unbiased: two independent draws of one distribution give ~0, a shifted one clearly more
    same = M.kid_from_features(_features(200, 32, 5), _features(200, 32, 6))[0]
    shifted = M.kid_from_features(_features(200, 32, 5), _features(200, 32, 6, shift=0.2))[0]
    assert abs(same) < 0.05 * shifted


# --------------------------------------------------------------------------------------------------- token analysis


def test_position_entropy_known_answers():
    ids = torch.tensor([[5, 0, 1], [5, 1, 1], [5, 2, 2], [5, 3, 2]])  # 4 images, 3 positions
    torch.testing.assert_close(M.position_entropy(ids), torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64))
    grid = M.position_entropy(ids.reshape(4, 1, 3))
    assert grid.shape == (1, 3)


def test_reduce_statistics_does_not_depend_on_how_images_were_split_or_ordered():
    rng = np.random.default_rng(0)
    per_image = {f"img{i}": {"fid_ref": rng.normal(size=16).astype(np.float32),
                             "fid_rec": rng.normal(size=16).astype(np.float32),
                             "ids": rng.integers(0, 8, (2, 2)), "codebook_size__ids": np.asarray(8)}
                 for i in range(5)}
    shuffled = dict(random.Random(1).sample(list(per_image.items()), 5))
    a, b = reduce_statistics(per_image, pixels_per_image=64), reduce_statistics(shuffled, pixels_per_image=64)
    assert a == b, "bit for bit: reduced in sorted-id order"
    metrics, meta = a
    all_ids = np.concatenate([v["ids"].ravel() for v in per_image.values()])
    p = np.bincount(all_ids, minlength=8) / all_ids.size
    entropy = -sum(q * math.log2(q) for q in p if q > 0)
    assert metrics["entropy_bits"] == pytest.approx(entropy)
    assert metrics["bpp_measured"] == pytest.approx(entropy * 4 / 64), "entropy x tokens per image / pixels"
    assert meta["token_grid"] == [2, 2] and len(meta["position_entropy"]) == 4
    assert meta["position_entropy_bound"] == pytest.approx(math.log2(5))
    assert {"fid", "kid", "kid_std"} <= set(metrics) and meta["fid_n"] == 5


@pytest.mark.parametrize(("n", "codebook", "dtype", "dense"), [(200, 16, np.uint8, True),
                                                                (1100, 2**18, np.int32, False)])
def test_streamed_reduction_of_stored_files_equals_the_stacked_metrics_bit_for_bit(tmp_path, n, codebook, dtype,
                                                                                   dense):
    """The files read one at a time (per-position counts in a dense histogram for a small codebook, the ids kept in
    their stored dtype for a large one; KID on seeded subsets past 1,000 images) give exactly the numbers of the
    whole stacked arrays, as `python -m reports merge` and the benchmark reduce them."""
    rng = np.random.default_rng(n)
    relpaths = {}
    for k in range(n):
        arrays = {"ids": rng.integers(0, codebook, (3, 4)).astype(dtype),
                  "fid_ref": rng.normal(size=8).astype(np.float32), "fid_rec": rng.normal(size=8).astype(np.float32)}
        relpaths[f"img{k:05d}"] = save_image_stats(tmp_path, f"stats/t/img{k:05d}.npz", arrays, {"ids": codebook})
    metrics, meta = reduce_stored_statistics(tmp_path, relpaths, pixels_per_image=64)
    loaded = [np.load(tmp_path / relpaths[i]) for i in sorted(relpaths)]
    ids = torch.from_numpy(np.stack([f["ids"] for f in loaded]).astype(np.int64))
    ref, rec = (torch.from_numpy(np.stack([f[key] for f in loaded])).double() for key in ("fid_ref", "fid_rec"))
    assert {k: metrics[k] for k in M.token_statistics(ids, codebook)} == M.token_statistics(ids, codebook)
    assert meta["position_entropy"] == [round(abs(float(v)), 6) for v in M.position_entropy(ids).flatten()]
    assert metrics["fid"] == M.fid_from_features(ref, rec)
    assert (metrics["kid"], metrics["kid_std"], meta["kid_subset_size"]) == M.kid_from_features(ref, rec)
    reducer = StatisticsReducer(n)
    reducer.add("img00000", np.load(tmp_path / relpaths["img00000"]))
    assert (reducer.codes["ids"].histogram is not None) is dense, "the smaller of the two position counters"


def test_reducer_refuses_unsorted_ids_and_names_the_image_with_bad_ids():
    reducer = StatisticsReducer(3)
    good = {"ids": np.zeros((2, 2), np.uint8), "codebook_size__ids": np.asarray(4)}
    reducer.add("b", good)
    with pytest.raises(ValueError, match="sorted image-id order"):
        reducer.add("a", good)
    with pytest.raises(ValueError, match=r"ids of c: token ids must lie in \[0, 4\); got \[0, 9\]"):
        reducer.add("c", {"ids": np.array([[0, 9], [1, 2]]), "codebook_size__ids": np.asarray(4)})
    with pytest.raises(TypeError, match="ids of d: token statistics need an integer id tensor; got torch.float32"):
        reducer.add("d", {"ids": np.zeros((2, 2), np.float32), "codebook_size__ids": np.asarray(4)})
    with pytest.raises(ValueError, match="fid_ref of e: 3 features, other images 2"):
        features = StatisticsReducer(2)
        features.add("d", {"fid_ref": np.zeros(2, np.float32)})
        features.add("e", {"fid_ref": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="1 of the 3 announced images"):
        reducer.result()


# ------------------------------------------------------------------------------------- what the report shows


def _png(path: Path, value: int, size: int = 16) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)
    return path.as_posix()


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    """Two tokenizers (the 8-bit SD-VAE pair) on 5 images, with rFID / KID over n=5 (< 2048) and token statistics."""
    d = tmp_path / "r"
    rec = d / R.RECORDS_FILE
    R.append_record(rec, {"type": "run", "options": {"bootstrap": 300}})
    for t, (name, offset) in enumerate((("vae_sd_mse_q8_512", 0.0), ("vae_sd_mse_512", 1.0))):
        for i in range(5):
            _png(d / f"originals/16/img{i}.png", 100)
            _png(d / f"recon/{name}/img{i}.png", 100 + 10 * i)
            R.append_record(rec, {"type": "image", "tokenizer": name, "image_id": f"img{i}", "resolution": 16,
                                  "metrics": {"psnr": 30.0 + offset - i, "ssim": 0.9, "lpips": 0.1 + 0.01 * i,
                                              "mae": 0.01, "rmse": 0.02, "bpp": 0.5 + 1.5 * t},
                                  "recon": f"recon/{name}/img{i}.png", "original": f"originals/16/img{i}.png"})
        R.append_record(rec, {"type": "dataset", "tokenizer": name,
                              "metrics": {"fid": 12.0 + t, "kid": 0.01, "kid_std": 0.002, "bpp": 0.5 + 1.5 * t},
                              "meta": {"fid_n": 5, "fid_dim": 2048, "n": 5}})
    return d


def test_summary_shows_intervals_kid_the_small_n_warning_and_the_quantisation_pair(report_dir: Path):
    files = R.build_report(report_dir)
    md = files["markdown"].read_text()
    report = R.aggregate(report_dir)
    psnr = report["tokenizers"]["vae_sd_mse_q8_512"]["metrics"]["psnr"]
    assert psnr["ci_low"] < psnr["mean"] < psnr["ci_high"] and psnr["ci_resamples"] == 300, "the run's --bootstrap"
    assert f"[{psnr['ci_low']:.2f}, {psnr['ci_high']:.2f}]" in md
    assert "KID ↓" in md and "0.0100 ± 0.0020 (n=5) †" in md and "12.00 (n=5) †" in md
    assert "† n is below the Inception feature dimension (2048)" in md
    assert "8-bit latent quantisation: `vae_sd_mse_q8_512` against `vae_sd_mse_512`" in md
    assert "| PSNR | 28.00 | 29.00 | -1.00 |" in md and "| rFID | 12.00 | 13.00 | -1.00 |" in md
    with open(files["summary_csv"], newline="") as f:
        rows = {r["tokenizer"]: r for r in csv.DictReader(f)}
    assert float(rows["vae_sd_mse_q8_512"]["psnr_ci_low"]) == pytest.approx(psnr["ci_low"])
    assert float(rows["vae_sd_mse_512"]["kid_std"]) == 0.002 and rows["vae_sd_mse_512"]["fid_n"] == "5"


def test_worst_case_grids_show_the_k_worst_of_each_tokenizer(report_dir: Path):
    files = R.build_report(report_dir)
    assert {"worst_psnr", "worst_lpips"} <= set(files)
    worst = worst_rows(R.aggregate(report_dir), "psnr", 2)
    assert [r["image_id"] for r in worst["vae_sd_mse_512"]] == ["img4", "img3"], "lowest PSNR first"
    assert [r["image_id"] for r in worst_rows(R.aggregate(report_dir), "lpips", 1)["vae_sd_mse_512"]] == ["img4"]
    with Image.open(files["worst_psnr"]) as im:
        assert im.height > 2 * 3 * 160, "three rows (original, reconstruction, difference) per tokenizer"
    assert "grid_worst_psnr.png" in files["markdown"].read_text()


def test_worst_tracker_saves_every_image_that_ends_up_among_the_k_worst():
    values = {f"i{k}": {"psnr": float(v)} for k, v in enumerate([30, 12, 25, 40, 11, math.inf, 13, 50])}
    tracker, saved = WorstTracker(2, {"psnr": +1}), set()
    for image_id, metrics in values.items():
        if tracker.offer(image_id, metrics):
            saved.add(image_id)
    assert {"i4", "i1"} <= saved, "the two lowest PSNRs were saved when they came"
    assert "i5" not in saved and "i7" not in saved, "a perfect copy (inf) or a good image is not a worst case"


# ------------------------------------------------------------------------------------------------- --seeds K


def test_seed_spread_separates_seed_noise_from_image_differences():
    images = [{"tokenizer": "s", "image_id": f"i{k}", "metrics": {"psnr": 20.0 + 10 * k, "bpp": 1.0}} for k in range(3)]
    report = {"images": images, "tokenizers": {"s": {"metrics": {"psnr": {}, "bpp": {}}}}}
    records = [{"type": "seed_image", "tokenizer": "s", "image_id": f"i{k}", "run_seed": seed,
                "metrics": {"psnr": 20.0 + 10 * k + (1.0 if seed == 1 else -1.0)}} for k in range(3) for seed in (1, 2)]
    add_seed_spread(report, records)
    spread = report["tokenizers"]["s"]["seed_spread"]
    assert spread["seeds"] == 3 and set(spread["metrics"]) == {"psnr"}
    assert spread["metrics"]["psnr"]["between_seed_std"] == pytest.approx(1.0), "values x-1, x, x+1 per image"
    assert spread["metrics"]["psnr"]["between_image_std"] == pytest.approx(10.0)


def test_seed_spread_ignores_decodes_made_under_another_config():
    """Extra decodes recorded by an earlier run with other settings (another config id) never enter the spread."""
    images = [{"tokenizer": "s", "image_id": f"i{k}", "metrics": {"psnr": 20.0 + 10 * k}, "protocol": "p",
               "config": "new"} for k in range(3)]
    report = {"images": images, "tokenizers": {"s": {"metrics": {"psnr": {}}}}}
    same = [{"type": "seed_image", "tokenizer": "s", "image_id": f"i{k}", "run_seed": 1, "protocol": "p",
             "config": "new", "metrics": {"psnr": 20.0 + 10 * k + 1.0}} for k in range(3)]
    stale = [{"type": "seed_image", "tokenizer": "s", "image_id": f"i{k}", "run_seed": 2, "protocol": "p",
              "config": "old", "metrics": {"psnr": 0.0}} for k in range(3)]
    add_seed_spread(report, same + stale)
    spread = report["tokenizers"]["s"]["seed_spread"]
    assert spread["seeds"] == 2, "only the decode made under the main rows' config counts"
    assert spread["metrics"]["psnr"]["between_seed_std"] == pytest.approx(2 ** -0.5)


def test_seeds_option_decodes_a_sampling_detokenizer_again_per_seed(tmp_path: Path):
    data = dataset_folder(tmp_path, 2)
    proc = subprocess.run(bench_command("--tokenizers", "tatok_ardtok_tiny", "--dataset", str(data), "--seeds", "2",
                                        "--report-dir", str(tmp_path / "r")), cwd=REPO,
                          env=bench_env(tmp_path / "no_torch_home"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    records = R.read_records(tmp_path / "r")
    main = {r["image_id"]: r for r in records if r["type"] == "image"}
    extra = {r["image_id"]: r for r in records if r["type"] == "seed_image"}
    assert set(main) == set(extra) and {r["run_seed"] for r in extra.values()} == {1}
    assert all(extra[i]["metrics"]["psnr"] != main[i]["metrics"]["psnr"] for i in main), "another seed, another decode"
    protocol = next(r for r in records if r["type"] == "protocol")["fields"]
    assert "seeds" not in protocol["generation"], "K extra decodes do not change the main pass's numbers"
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "## Seed spread" in md and "| `tatok_ardtok_tiny` | 2 | PSNR |" in md
