"""`vtok perf`: one run prints every section's table and writes the same numbers as JSON; a failing section is
reported while the others run. Speeds are never asserted (they depend on the machine); their bookkeeping is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, shared_path
from vision_tokenizers.loader import default_workers
from vision_tokenizers.perf import format_table, machine
from vision_tokenizers.perf.images import generated_folder
from vision_tokenizers.perf.sections import run_section, worker_counts


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str]:
    """One `vtok perf --quick` run (tiny tokenizer from the golden files at its own 64 px, pixel metrics)."""
    out = tmp_path_factory.mktemp("perf")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "vision_tokenizers.cli", "perf", "--quick", "--json", str(out / "perf.json"),
         "--cache", str(out / "cache"), "--batch-size", "4", "--tokenizer", "magvit2_tiny", "--weights-dir",
         str(shared_path("golden")), "--model-resolution", "0", "--tokenizers", "magvit2_tiny,taef2_512",
         "--speed-timeout-s", "1"],
        cwd=REPO, capture_output=True, text=True, env={**env, "VTOK_CACHE": str(out / "vtok")}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "perf.json").read_text()), proc.stdout


def test_quick_run_prints_every_section_and_writes_its_json(quick):
    results, stdout = quick
    assert list(results["sections"]) == ["pipeline", "harness", "rss", "speed"]
    assert all(section["error"] is None for section in results["sections"].values())
    for title in ("== data pipeline", "== harness vs bare model loop", "== peak RSS", "== --random-weights"):
        assert title in stdout
    assert results["machine"]["cpus"] >= 1 and "generated 640x480" in results["dataset"]


def test_pipeline_rows_are_0_1_2_and_all_workers_with_measured_throughputs(quick):
    rows = quick[0]["sections"]["pipeline"]["rows"]
    assert [r["workers"] for r in rows] == [w for w, _ in worker_counts()]
    assert rows[-1]["label"] == f"{default_workers()} (all)"
    for row in rows:
        assert row["images"] == 16 and row["seconds"] > 0
        assert math.isclose(row["img_per_s"], row["images"] / row["seconds"])


def test_harness_ratio_is_computed_from_the_two_measured_throughputs(quick):
    section = quick[0]["sections"]["harness"]
    rows = section["rows"]
    assert rows[0]["path"].startswith("bare loop") and rows[0]["ratio_to_bare"] == 1.0
    assert any(r["path"].startswith("evaluate, pre-made") for r in rows)
    assert rows[-1]["path"].startswith(f"files -> {default_workers()} DataLoader workers")
    for row in rows:
        assert row["images"] == 8 and row["img_per_s"] > 0
        assert math.isclose(row["img_per_s"], row["images"] / row["seconds"])
        assert math.isclose(row["ratio_to_bare"], row["img_per_s"] / rows[0]["img_per_s"])
    assert any("no LPIPS, no Inception" in note for note in section["notes"])  # it says what the harness computed


def test_rss_runs_once_per_count_in_a_fresh_process(quick):
    section = quick[0]["sections"]["rss"]
    assert [r["images"] for r in section["rows"]] == [8, 24]
    for row in section["rows"]:
        assert "error" not in row and row["peak_rss_mb"] > 50 and row["workers_peak_rss_mb"] > 0
    assert any(note.startswith("growth ") for note in section["notes"])


def test_speed_lists_unsupported_and_too_slow_tokenizers_with_the_reason(quick):
    rows = {r["tokenizer"]: r for r in quick[0]["sections"]["speed"]["rows"]}
    assert rows["magvit2_tiny"]["status"] == "skipped" and "no released-size config" in rows["magvit2_tiny"]["reason"]
    assert rows["taef2_512"]["status"] == "skipped" and rows["taef2_512"]["reason"].startswith("over 1 s")


def test_a_failing_section_is_reported_and_the_table_goes_on():
    def broken(section):
        section.rows.append({"images": 1, "error": "x"})
        raise ValueError("no such\nfolder")
    failed = run_section("rss", broken)
    assert failed.error == "ValueError: no such folder"
    fine = run_section("pipeline", lambda s: s.rows.append({"workers": 0, "label": "0", "images": 2, "seconds": 1.0,
                                                             "img_per_s": 2.0}))
    table = format_table({"started": "now", "machine": machine(), "dataset": "d",
                          "sections": {"pipeline": fine.as_dict(), "rss": failed.as_dict()}})
    assert "[FAILED: ValueError: no such folder]" in table and "== data pipeline" in table


def test_generated_images_are_deterministic_640x480_jpegs(tmp_path):
    from PIL import Image

    a, b = generated_folder(3, tmp_path / "a"), generated_folder(2, tmp_path / "b")
    assert [p.name for p in sorted(a.iterdir())] == ["img00000.jpg", "img00001.jpg", "img00002.jpg"]
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in ("img00000.jpg", "img00001.jpg"))
    assert (a / "img00000.jpg").read_bytes() != (a / "img00001.jpg").read_bytes()
    with Image.open(a / "img00002.jpg") as image:
        assert image.size == (640, 480) and image.format == "JPEG"
