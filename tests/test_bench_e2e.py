"""The benchmark end to end, as a user runs it: `pytest bench ...` in a subprocess, then the files it leaves."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, shared_path
from vision_tokenizers.images import center_crop_resize, load_image
from vision_tokenizers.registry import list_tokenizers
from vision_tokenizers.results import read_records


def run_bench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # A clean environment: under xdist the PYTEST_* variables would make the child think it is a worker.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    return subprocess.run([sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def image_records(report: Path) -> int:
    return sum(r["type"] == "image" for r in read_records(report))


@pytest.fixture(scope="module")
def taef2_run(tmp_path_factory):
    """TAEF2 (real weights) at 64 px on 3 real photos + 1 broken file, a missing tokenizer, and two gates."""
    tmp = tmp_path_factory.mktemp("taef2")
    data = tmp / "images"
    data.mkdir()
    for path in sorted(shared_path("images", "coco_val2017").glob("*.jpg"))[:3]:
        (data / path.name).write_bytes(path.read_bytes())
    (data / "broken.jpg").write_bytes(b"this is not a jpeg")
    gates = tmp / "gates.yaml"
    gates.write_text("taef2_512:\n  psnr_min: 99\n  ssim_min: 0.0\n")
    report = tmp / "report"
    proc = run_bench("--tokenizers", "taef2_512,magvit2_256", "--dataset", str(data), "--resolution", "64",
                     "--weights-dir", str(shared_path("weights")), "--offline", "--thresholds", str(gates),
                     "--report-dir", str(report), "--benchmark-json", str(tmp / "out.json"))
    return proc, report, tmp


def test_gate_above_measured_value_fails_the_run_with_a_clear_message(taef2_run):
    proc, _, _ = taef2_run
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "taef2_512: psnr = " in proc.stdout and "violates psnr_min (must be >= 99)" in proc.stdout
    assert "test_threshold[taef2_512-ssim_min] PASSED" in proc.stdout or "1 failed" in proc.stdout


def test_missing_weights_skip_with_one_line_reason(taef2_run):
    proc, report, _ = taef2_run
    reason = "weights for magvit2_256 unavailable (offline, not in the hub cache): put imagenet_256_L.ckpt in"
    assert reason in proc.stdout
    assert "magvit2_256" in (report / "summary.md").read_text()


def test_report_files_and_bad_image(taef2_run):
    proc, report, _ = taef2_run
    for name in ("benchmark_results.csv", "summary.md", "summary.png", "grid.png", "report.json"):
        assert (report / name).stat().st_size > 0, name
    rows = list(csv.DictReader((report / "benchmark_results.csv").open()))
    assert sorted(r["image_id"] for r in rows) == sorted(p.stem for p in shared_path(
        "images", "coco_val2017").glob("*.jpg"))[:3]
    assert all(float(r["psnr"]) > 10 for r in rows)
    first = sorted(shared_path("images", "coco_val2017").glob("*.jpg"))[0]
    saved = np.asarray(Image.open(report / "originals" / "64" / f"{first.stem}.png"))
    np.testing.assert_array_equal(saved, np.asarray(center_crop_resize(load_image(first), 64)))  # lossless PNGs
    summary = (report / "summary.md").read_text()
    assert "broken.jpg" in summary and "cannot be decoded" in summary
    assert "broken.jpg: cannot be decoded as an image" in proc.stdout  # one warning line, the run went on


def test_benchmark_json_has_encode_and_decode(taef2_run):
    _, report, tmp = taef2_run
    names = {b["name"] for b in json.loads((tmp / "out.json").read_text())["benchmarks"]}
    assert {"test_speed[taef2_512-encode]", "test_speed[taef2_512-decode]"} <= names
    timings = json.loads((report / "report.json").read_text())
    assert "taef2_512" in json.dumps(timings) and "median" in json.dumps(timings)


def test_terminal_shows_the_quality_table_and_each_missing_tokenizer_once(taef2_run):
    """The README's first command must put the measured numbers on the screen (those of summary.md), one line per
    tokenizer not run with its fix, then the report path; pytest's -ra folds a tokenizer's skipped tests into one."""
    proc, report, _ = taef2_run
    out = proc.stdout
    lines = out.splitlines()
    taef2 = json.loads((report / "report.json").read_text())["tokenizers"]["taef2_512"]
    psnr, ssim = f"{taef2['metrics']['psnr']['mean']:.2f}", f"{taef2['metrics']['ssim']['mean']:.4f}"
    md_row = next(line for line in (report / "summary.md").read_text().splitlines()
                  if line.startswith("| `taef2_512` | 64 | 3 |"))  # the quality table's row
    assert psnr in md_row and ssim in md_row
    assert out.count("= vtok summary =") == 1
    row = next(line for line in lines if line.startswith("taef2_512 "))
    assert row.split()[1:4] == ["64", "3", psnr] and ssim in row
    short = ("not run: magvit2_256: weights missing: run `vtok download weights magvit2_256 --weights-dir "
             f"{shared_path('weights')}`, or put imagenet_256_L.ckpt in {shared_path('weights')}/magvit2/")
    assert out.count(short) == 1
    full = "weights for magvit2_256 unavailable (offline, not in the hub cache)"
    assert out.count(full) == 1, "-ra must list the reason once, not once per test"
    assert re.search(r"SKIPPED \[[2-9]\d*\] fixtures/tokenizers\.py:\d+: " + re.escape(full), out)  # all its tests
    assert out.index(row) < out.index(short) < out.index(f"vtok report: {report}") < out.index("short test summary")


def test_xdist_controller_prints_one_summary(tmp_path):
    golden = shared_path("golden")
    proc = run_bench("-n", "2", "--tokenizers", "magvit2_tiny,titok_tiny,magvit2_256", "--weights-dir", str(golden),
                     "--offline", "--report-dir", str(tmp_path / "r"), "--benchmark-disable", "-m", "not speed")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count("= vtok summary =") == 1 and proc.stdout.count("vtok report: ") == 1
    lines = proc.stdout.splitlines()
    assert {line.split()[0] for line in lines if line.startswith(("magvit2_tiny ", "titok_tiny "))} == {
        "magvit2_tiny", "titok_tiny"}
    assert proc.stdout.count("not run: magvit2_256: weights missing") == 1
    assert proc.stdout.count("weights for magvit2_256 unavailable") == 1  # folded across both workers


def test_tiny_golden_checkpoints_run_the_whole_benchmark(tmp_path):
    golden = shared_path("golden")
    proc = run_bench("--tokenizers", "tiny", "--weights-dir", str(golden), "--offline",
                     "--report-dir", str(tmp_path / "r"), "--benchmark-disable")
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = list(csv.DictReader((tmp_path / "r" / "benchmark_results.csv").open()))
    tiny = set(list_tokenizers(include_tiny=True)) - set(list_tokenizers())
    assert {"magvit2_tiny", "titok_tiny", "tatok_ardtok_tiny", "tatok_sana_tiny", "tatok_lumina2_tiny"} <= tiny
    assert {r["tokenizer"] for r in rows} == tiny
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "codebook_usage" in json.dumps(report)


def test_rerun_into_the_same_report_dir_resumes(taef2_run):
    _, report, tmp = taef2_run
    before = image_records(report)
    assert before == 3
    proc = run_bench("--tokenizers", "taef2_512", "--dataset", str(tmp / "images"), "--resolution", "64",
                     "--weights-dir", str(shared_path("weights")), "--offline", "--report-dir", str(report),
                     "-k", "reconstruction")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "taef2_512: resumed 3 images" in proc.stdout
    assert image_records(report) == before  # nothing recomputed


@pytest.mark.parametrize(("args", "message"), [
    (("--tokenizers", "nope_256"), "--tokenizers: unknown tokenizer nope_256"),
    (("--dataset", "/no/such/folder"),
     "--dataset /no/such/folder: not 'samples', 'coco', 'imagenet', 'textsizes' or an existing folder"),
    (("--thresholds", "/no/such/gates.yaml"), "--thresholds /no/such/gates.yaml: cannot read"),
    (("--tokenizers", "magvit2_tiny,titok_tiny", "--resolution", "32"),  # not a failed batch per image
     "--resolution 32 does not fit titok_tiny (fixed at 64 px); run it without --resolution"),
])
def test_bad_options_are_one_usage_error(args, message):
    proc = run_bench(*args)
    assert proc.returncode == 4
    assert message in proc.stderr and proc.stderr.count("ERROR") == 1
