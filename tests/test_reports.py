"""The report layer: JSONL store, aggregation, CSV / Markdown / plots / grids, `python -m reports`, the pytest plugin.

Fast and model-free: synthetic records for a few tokenizers with tiny generated PNGs.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reports.plugin import Recorder, point_latest
from vision_tokenizers import get_spec
from vision_tokenizers import results as R

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
IMAGES = ("img0", "img1", "img2")
# magvit2_256's run recorded its facts (published numbers); tiny_b recorded none and has no LPIPS;
# titok_l32_256 never ran.
TOKS = {"magvit2_256": 32, "tiny_b": 64}
SKIP_REASON = "weights for titok_l32_256 not in cache and --offline"
LPIPS_REASON = "lpips weights unavailable (offline)"


def _png(path: Path, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _metrics(tok: str, i: int) -> dict:
    base = 20.0 + 3 * i + (5 if tok == "magvit2_256" else 0)
    out = {"psnr": base, "ssim": 0.5 + 0.1 * i, "mae": 0.05 + 0.01 * i, "rmse": 0.08 + 0.01 * i, "bpp": 0.07}
    if tok == "magvit2_256":
        out["lpips"] = 0.3 - 0.05 * i
    return out


def _write_synthetic(d: Path) -> Path:
    rec = d / R.RECORDS_FILE
    R.append_record(rec, {"type": "run", "started": "2025-01-01T00:00:00+00:00", "argv": ["bench"],
                          "options": {"dataset": "samples", "device": "cpu"}, "host": {"python": "3.11"}})
    R.append_record(rec, {"type": "skip", "tokenizer": "titok_l32_256", "what": "tokenizer", "reason": SKIP_REASON})
    R.append_record(rec, {"type": "tokenizer", "tokenizer": "magvit2_256",
                          "facts": get_spec("magvit2_256").facts(), "settings": {}, "weights": {}})
    for tok, res in TOKS.items():
        for i, image_id in enumerate(IMAGES):
            _png(d / f"originals/{res}/{image_id}.png", res, i)
            _png(d / f"recon/{tok}/{image_id}.png", res, 100 + i)
            R.append_record(rec, {"type": "image", "tokenizer": tok, "image_id": image_id, "dataset": "samples",
                                  "resolution": res, "metrics": _metrics(tok, i),
                                  "recon": f"recon/{tok}/{image_id}.png",
                                  "original": f"originals/{res}/{image_id}.png"})
        for stage, t in (("encode", 0.02), ("decode", 0.04)):
            if tok == "tiny_b" and stage == "decode":
                continue
            R.append_record(rec, {"type": "timing", "tokenizer": tok, "stage": stage, "batch_size": 4,
                                  "median_s": t, "iqr_s": t / 10, "rounds": 5, "device": "cpu"})
    R.append_record(rec, {"type": "skip", "tokenizer": "tiny_b", "what": "metric:lpips", "reason": LPIPS_REASON})
    R.append_record(rec, {"type": "dataset", "tokenizer": "magvit2_256",
                          "metrics": {"fid": 42.5, "codebook_usage": 0.25, "unique_codes": 12, "entropy_bits": 3.5,
                                      "perplexity": 11.3, "bpp": 0.07},
                          "meta": {"fid_backend": "torchmetrics", "n": 3}})
    return d


@pytest.fixture
def synthetic_dir(tmp_path: Path) -> Path:
    """A fresh synthetic report directory (records + PNGs, no report yet), for tests that change it."""
    return _write_synthetic(tmp_path / "report")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The report of the synthetic directory, built once for the read-only tests."""
    return R.build_report(_write_synthetic(tmp_path_factory.mktemp("built") / "report"))


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_build_report_writes_every_file(built: dict[str, Path]):
    assert {"csv", "markdown", "summary_png", "grid", "json"} <= set(built)
    assert {"grid_32", "grid_64"} <= set(built), "tokenizers differ in resolution: one native grid per resolution"
    for path in built.values():
        assert path.is_file() and path.stat().st_size > 0 and path.parent == built["csv"].parent


def test_csv_one_row_per_image_and_tokenizer(built: dict[str, Path]):
    rows = _csv_rows(built["csv"])
    assert len(rows) == 6
    assert list(rows[0]) == ["tokenizer", "image_id", "dataset", "resolution", "psnr", "ssim", "lpips", "mae",
                             "rmse", "bpp"]
    assert {(r["tokenizer"], r["image_id"]) for r in rows} == {(t, i) for t in TOKS for i in IMAGES}
    tiny = [r for r in rows if r["tokenizer"] == "tiny_b"]
    assert all(r["lpips"] == "" for r in tiny), "a metric that was not computed is empty, never 0"
    assert float(rows[0]["psnr"]) == pytest.approx(_metrics(rows[0]["tokenizer"], IMAGES.index(rows[0]["image_id"]))
                                                   ["psnr"])


def test_summary_markdown(built: dict[str, Path]):
    md = built["markdown"].read_text()
    for tok in TOKS:
        values = [_metrics(tok, i) for i in range(3)]
        psnr = [v["psnr"] for v in values]
        ssim = [v["ssim"] for v in values]
        assert f"{statistics.mean(psnr):.2f} ± {statistics.stdev(psnr):.2f}" in md
        assert f"{statistics.mean(ssim):.4f} ± {statistics.stdev(ssim):.4f}" in md
    lpips = [_metrics("magvit2_256", i)["lpips"] for i in range(3)]
    assert f"{statistics.mean(lpips):.4f} ± {statistics.stdev(lpips):.4f}" in md
    assert f"skipped ({LPIPS_REASON})" in md, "missing LPIPS is 'skipped (reason)'"
    assert SKIP_REASON in md and "## Skipped" in md
    assert "not measured" in md, "tiny_b has no rFID and no decode timing, with no skip record: 'not measured'"
    assert "42.50 (n=3)" in md and "rFID backend (`magvit2_256`): torchmetrics" in md
    assert "5.00 ± 0.50 ms" in md and "10.0 ± 1.0 ms" in md, "per-image time = batch median / batch size"
    assert "200" in md, "images/s = batch size / median"
    published = get_spec("magvit2_256").published
    assert f"{published['psnr']:.2f}" in md, "the published numbers the run recorded are shown"
    for convention in ("mean of per-image PSNR", "Gaussian window 11", "sigma 1.5", "AlexNet", "[-1, 1]",
                       "round(x * 255)", "tokenizer's resolution"):
        assert convention in md
    assert "| 0.0000" not in md and "| 0.00 |" not in md


def test_plots_and_grids_are_sensible_pngs(built: dict[str, Path]):
    w, h = _png_size(built["summary_png"])
    assert w >= 1200 and h >= 600
    w, h = _png_size(built["grid"])
    rows, cols = 1 + len(TOKS), len(IMAGES)
    assert w >= cols * R.GRID_CELL and h >= rows * R.GRID_CELL and w < 4000 and h < 4000
    w, h = _png_size(built["grid_32"])
    assert w >= 3 * 32 and h >= 2 * 32


def test_report_json_is_strict_and_complete(built: dict[str, Path]):
    path = built["json"]

    def reject(name):
        raise ValueError(name)

    data = json.loads(path.read_text(), parse_constant=reject)
    tok = data["tokenizers"]["magvit2_256"]
    assert tok["n_images"] == 3 and tok["metrics"]["psnr"]["mean"] == pytest.approx(28.0)
    assert tok["dataset_metrics"]["fid"] == 42.5 and tok["timing"]["encode"]["per_image_s"] == pytest.approx(0.005)
    assert data["tokenizers"]["tiny_b"]["missing"]["lpips"] == LPIPS_REASON
    assert data["tokenizers"]["titok_l32_256"]["status"] == "skipped"
    assert data["errors"] == []


def test_missing_everything_is_marked_not_zero(tmp_path: Path):
    rec = tmp_path / R.RECORDS_FILE
    R.append_record(rec, {"type": "image", "tokenizer": "t", "image_id": "a", "metrics": {"psnr": 20.0}})
    R.append_record(rec, {"type": "skip", "tokenizer": None, "what": "metric:fid", "reason": "no inception weights"})
    long_reason = "lpips: AlexNet weights not in /root/.cache/torch/hub/checkpoints and downloads are off " * 2
    R.append_record(rec, {"type": "skip", "tokenizer": None, "what": "metric:lpips", "reason": long_reason})
    files = R.build_report(tmp_path)
    md = files["markdown"].read_text()
    assert "skipped (no inception weights)" in md and "20.00" in md
    assert "skipped (see note 1)" in md and f"- note 1: {long_reason}" in md, "long reasons go under the table"
    assert "grid" not in files, "no reconstructions saved: no grid"
    _png_size(files["summary_png"])


def test_latest_record_wins(synthetic_dir: Path):
    rec = synthetic_dir / R.RECORDS_FILE
    R.append_record(rec, {"type": "image", "tokenizer": "magvit2_256", "image_id": "img0", "dataset": "samples",
                          "resolution": 32, "metrics": {"psnr": 99.0}})
    rows = _csv_rows(R.build_report(synthetic_dir)["csv"])
    assert len(rows) == 6
    row = next(r for r in rows if (r["tokenizer"], r["image_id"]) == ("magvit2_256", "img0"))
    assert float(row["psnr"]) == 99.0 and float(row["ssim"]) == pytest.approx(0.5), "merged metric by metric"
    report = R.aggregate(synthetic_dir)
    assert report["tokenizers"]["magvit2_256"]["metrics"]["psnr"]["mean"] == pytest.approx((99 + 28 + 31) / 3)


def test_later_results_supersede_a_skip(synthetic_dir: Path):
    R.append_record(synthetic_dir / R.RECORDS_FILE,
                    {"type": "image", "tokenizer": "titok_l32_256", "image_id": "img0", "metrics": {"psnr": 15.0}})
    report = R.aggregate(synthetic_dir)
    assert report["tokenizers"]["titok_l32_256"]["status"] == "ok"
    assert all(s["reason"] != SKIP_REASON for s in report["skips"])


def test_worker_files_are_merged_by_time(tmp_path: Path):
    R.append_record(tmp_path / "records.gw0.jsonl", {"type": "image", "tokenizer": "t", "image_id": "a",
                                                     "metrics": {"psnr": 1.0}, "ts": 2.0})
    R.append_record(tmp_path / "records.gw1.jsonl", {"type": "image", "tokenizer": "t", "image_id": "a",
                                                     "metrics": {"psnr": 2.0}, "ts": 1.0})
    R.append_record(tmp_path / "records.gw1.jsonl", {"type": "image", "tokenizer": "t", "image_id": "b",
                                                     "metrics": {"psnr": 3.0}, "ts": 3.0})
    report = R.aggregate(tmp_path)
    by_id = {r["image_id"]: r["metrics"]["psnr"] for r in report["images"]}
    assert by_id == {"a": 1.0, "b": 3.0}


def test_truncated_last_line_is_tolerated(synthetic_dir: Path):
    rec = synthetic_dir / R.RECORDS_FILE
    n = len(R.read_records(rec))
    with open(rec, "a") as f:
        f.write('{"type": "image", "tokenizer": "magvit2_256", "image_id": "img9", "metr')
    with pytest.warns(UserWarning, match="truncated last line"):
        records = R.read_records(rec)
    assert len(records) == n
    with pytest.warns(UserWarning):
        rows = _csv_rows(R.build_report(synthetic_dir)["csv"])
    assert len(rows) == 6
    # the next append starts on a new line: the partial line stays one malformed line, the new record is intact
    R.append_record(rec, {"type": "image", "tokenizer": "tiny_b", "image_id": "img3", "metrics": {"psnr": 1.0}})
    with pytest.warns(UserWarning, match="malformed line"):
        records = R.read_records(rec)
    assert len(records) == n + 1 and records[-1]["image_id"] == "img3"


def test_completed_images(synthetic_dir: Path):
    assert R.completed_images(synthetic_dir, "magvit2_256") == set(IMAGES)
    assert R.completed_images(synthetic_dir, "tiny_b", metrics=["lpips"]) == set()
    assert R.completed_images(R.read_records(synthetic_dir), "nope") == set()


def test_python_m_reports_rebuilds(synthetic_dir: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "reports", str(synthetic_dir)], capture_output=True, text=True,
                         env=env, cwd=synthetic_dir.parent, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"markdown: {synthetic_dir / 'summary.md'}" in out.stdout
    assert (synthetic_dir / "summary.md").is_file() and (synthetic_dir / "benchmark_results.csv").is_file()
    missing = subprocess.run([sys.executable, "-m", "reports", str(synthetic_dir / "nope")], capture_output=True,
                             text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "no records" in missing.stderr


# ------------------------------------------------------------------------------------------- Recorder / latest


def test_recorder_writes_run_record_first_and_saves_images(tmp_path: Path):
    d = tmp_path / "r"
    rec = Recorder(d, run={"type": "run", "started": "now", "options": {"device": "cpu"}})
    assert not d.exists(), "nothing is written before the first record"
    img = np.full((3, 8, 8), 0.5, dtype=np.float32)  # CHW float in [0, 1]
    rec.image("tok", "a/b", {"psnr": np.float64(30.0), "lpips": None}, resolution=8, recon=img, original=img)
    rec.timing("tok", "encode", 2, 0.01, 0.001, 5, "cpu")
    rec.dataset("tok", {"fid": 3.0}, meta={"fid_backend": "x", "n": 1})
    rec.skip("tok", "metric:lpips", "not today")
    records = R.read_records(d)
    assert [r["type"] for r in records] == ["run", "image", "timing", "dataset", "skip"]
    assert records[0]["host"]["python"] and all("ts" in r for r in records)
    image = records[1]
    assert image["metrics"] == {"psnr": 30.0} and image["recon"] == "recon/tok/a/b.png"
    assert image["original"] == "originals/8/a/b.png"
    with Image.open(d / image["recon"]) as im:
        assert im.size == (8, 8) and im.getpixel((0, 0)) == (128, 128, 128), "rounded, not floored"
    assert rec.completed_images("tok") == {"a/b"}
    with pytest.raises(ValueError):
        rec.save_image(Image.new("RGB", (2, 2)), "../escape.png")
    with pytest.raises(ValueError):
        rec.timing("tok", "both", 1, 1.0, 0.0, 1, "cpu")


def test_point_latest_symlink_and_text_fallback(tmp_path: Path, monkeypatch):
    a, b = tmp_path / "20250101-000000", tmp_path / "20250101-000001"
    a.mkdir()
    b.mkdir()
    link = tmp_path / "latest"
    point_latest(a, link)
    assert link.is_symlink() and link.resolve() == a.resolve()
    point_latest(b, link)
    assert link.resolve() == b.resolve(), "replaced atomically"

    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    link2 = tmp_path / "latest2"
    point_latest(a, link2)
    assert link2.is_file() and link2.read_text().strip() == a.name


# ------------------------------------------------------------------------------------------- the pytest plugin

TEST_FILE = """
from PIL import Image

def test_records(record, report_dir):
    assert report_dir.is_dir()
    img = Image.new("RGB", (16, 16), (200, 10, 10))
    record.image("tok_x", "im0", {"psnr": 20.0, "ssim": 0.5}, dataset="d", resolution=16, recon=img, original=img)
    record.timing("tok_x", "encode", 2, 0.02, 0.001, 5, "cpu")
    record.skip("tok_y", "tokenizer", "no weights here")
"""


@pytest.fixture
def bench(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((REPO / "conftest.py").read_text())
    pytester.makepyfile(test_bench=TEST_FILE)
    return pytester


def test_plugin_writes_report_to_report_dir(bench: pytest.Pytester):
    out_dir = bench.path / "out"
    result = bench.runpytest("-p", "reports.plugin", f"--report-dir={out_dir}", "--device=cpu")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"vtok report: {out_dir / 'summary.md'}"])
    records = R.read_records(out_dir)
    assert records[0]["type"] == "run" and records[0]["options"]["device"] == "cpu"
    assert {r["type"] for r in records} == {"run", "image", "timing", "skip"}
    md = (out_dir / "summary.md").read_text()
    assert "no weights here" in md and "20.00" in md
    assert (out_dir / "grid.png").is_file() and (out_dir / "summary.png").is_file()
    assert not (bench.path / "results").exists(), "--report-dir given: no results/latest"


def test_plugin_default_dir_and_latest(bench: pytest.Pytester):
    bench.runpytest("-p", "reports.plugin").assert_outcomes(passed=1)
    latest = bench.path / "results" / "latest"
    assert latest.is_symlink()
    first = latest.resolve()
    assert (first / "summary.md").is_file() and first.parent == (bench.path / "results").resolve()
    bench.runpytest("-p", "reports.plugin").assert_outcomes(passed=1)
    assert latest.resolve() != first and (latest.resolve() / "summary.md").is_file(), "latest is the newest run"


def test_plugin_writes_nothing_without_records(pytester: pytest.Pytester):
    pytester.makeconftest((REPO / "conftest.py").read_text())
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "reports.plugin")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "results").exists()
    assert "vtok report" not in result.stdout.str()


def test_plugin_exit_status_reflects_tests_only(bench: pytest.Pytester, monkeypatch):
    bench.makepyfile(test_fail="def test_fail(record):\n    record.skip(None, 'metric:fid', 'x')\n    assert False\n")
    result = bench.runpytest("-p", "reports.plugin", "--report-dir=out")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED and (bench.path / "out" / "summary.md").is_file()

    def broken(report_dir):
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr(R, "build_report", broken)
    bench.makepyfile(test_fail="def test_ok():\n    pass\n")
    result = bench.runpytest("-p", "reports.plugin", "--report-dir=out2")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK, "a failed report never changes the exit status"
    result.stdout.fnmatch_lines(["*vtok report: ERROR*RuntimeError: plotting exploded*"])


@pytest.mark.slow
def test_plugin_under_xdist_one_file_per_worker(bench: pytest.Pytester, monkeypatch):
    pytest.importorskip("xdist")
    bench.makepyfile(test_more=TEST_FILE.replace("test_records", "test_more").replace("im0", "im1"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = bench.runpytest_subprocess("-p", "reports.plugin", "-p", "xdist", "-n", "2", "--report-dir=out")
    result.assert_outcomes(passed=2)
    out = bench.path / "out"
    assert sorted(p.name for p in out.glob("records*.jsonl")) == ["records.gw0.jsonl", "records.gw1.jsonl"]
    rows = _csv_rows(out / "benchmark_results.csv")
    assert sorted(r["image_id"] for r in rows) == ["im0", "im1"]
    result.stdout.fnmatch_lines([f"vtok report: {out / 'summary.md'}"])
