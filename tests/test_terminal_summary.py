"""What a person sees at the end of `pytest bench`: the quality table (the numbers of summary.md, from the built
report), one line per tokenizer that was not run with its short fix, and summary.png drawing only the tokenizers
that produced numbers. Synthetic records, no models; the real run is in tests/test_bench_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vision_tokenizers import results as R
from vision_tokenizers.results.formatting import metric_cell
from vision_tokenizers.results.plots import drawn_tokenizers
from vision_tokenizers.results.terminal import terminal_lines

HINT = "weights missing: run `vtok download weights gone_256`, or put gone.ckpt in w/gone/"
FULL = "weights for gone_256 unavailable (offline, not in the hub cache): put gone.ckpt in w/gone/ (from hf://x/y)"
OLD = "weights for old_256 unavailable (recorded before skips carried a hint)"
LPIPS = "lpips: AlexNet weights not in /cache/alexnet.pth and downloads are off; copy the file there"


def _records(d: Path) -> None:
    rec = d / R.RECORDS_FILE
    R.append_record(rec, {"type": "run", "started": "2025-01-01T00:00:00+00:00", "options": {"device": "cpu"}})
    for tok, res, psnr in (("good_64", 64, 30.0), ("broken_64", 64, 20.0)):
        R.append_record(rec, {"type": "tokenizer", "tokenizer": tok, "facts": {"resolution": res,
                                                                               "bits_per_pixel": 0.5}})
        for i in range(4):
            R.append_record(rec, {"type": "image", "tokenizer": tok, "image_id": f"im{i}", "resolution": res,
                                  "metrics": {"psnr": psnr + i, "ssim": 0.5 + 0.01 * i, "mae": 0.1, "rmse": 0.2,
                                              "bpp": 0.5}})
    R.append_record(rec, {"type": "skip", "tokenizer": "broken_64", "what": "image:failed", "image_id": "im9",
                          "reason": "ValueError: boom"})
    R.append_record(rec, {"type": "dataset", "tokenizer": "good_64", "metrics": {"fid": 12.3456, "bpp": 0.5},
                          "meta": {"fid_n": 4, "fid_dim": 2048}})
    R.append_record(rec, {"type": "skip", "tokenizer": None, "what": "metric:lpips", "reason": LPIPS})
    R.append_record(rec, {"type": "skip", "tokenizer": "gone_256", "what": "tokenizer", "reason": FULL, "hint": HINT})
    R.append_record(rec, {"type": "skip", "tokenizer": "old_256", "what": "tokenizer", "reason": OLD})
    R.append_record(rec, {"type": "skip", "tokenizer": "dead_64", "what": "batch", "image_ids": ["im0", "im1"],
                          "reason": "RuntimeError: every batch"})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str]:
    d = tmp_path_factory.mktemp("report")
    _records(d)
    files = R.build_report(d)
    return json.loads(files["json"].read_text()), files["markdown"].read_text()


def _row(lines: list[str], name: str) -> str:
    return next(line for line in lines if line.startswith(f"{name} "))


def test_table_shows_the_numbers_of_summary_md(report):
    built, summary = report
    wide = terminal_lines(built, width=200)
    assert wide[1].split()[:4] == ["tokenizer", "res.", "n", "PSNR"]
    good = built["tokenizers"]["good_64"]
    md_row = next(line for line in summary.splitlines() if line.startswith("| `good_64`"))
    for metric in ("psnr", "ssim"):  # wide enough: the very cells of summary.md, intervals included
        cell = metric_cell(good, metric)
        assert "[" in cell and cell in _row(wide, "good_64") and cell in md_row
    assert "12.35 (n=4) †" in _row(wide, "good_64") and "12.35 (n=4) †" in md_row
    assert _row(wide, "good_64").split()[1:3] == ["64", "4"] and _row(wide, "good_64").endswith("0.5000")


def test_narrow_terminal_drops_the_intervals_then_the_std_not_the_numbers(report):
    built, _ = report
    narrow = terminal_lines(built, width=80)
    assert all(len(line) <= 80 for line in narrow if not line.startswith("not run"))  # a fix is never cut
    row = _row(narrow, "good_64")
    assert "[" not in row and "31.50" in row and "0.5150" in row  # the means, as summary.md rounds them
    assert "mean" in narrow[0]


def test_not_run_lines_use_the_short_hint_once_and_missing_metrics_say_why(report):
    built, _ = report
    text = "\n".join(terminal_lines(built, width=120))
    assert text.count(f"not run: gone_256: {HINT}") == 1 and FULL not in text
    assert text.count(f"not run: old_256: {OLD}") == 1  # older records without a hint: their full reason
    assert "failed: dead_64: every image failed" in text
    assert "broken_64: 1 image failed, left out of its numbers" in text
    assert "LPIPS not measured (see summary.md): AlexNet weights not in" in text
    assert "† rFID on fewer images than its 2048 features: biased upward" in text


def test_summary_png_draws_only_tokenizers_with_numbers_and_names_the_others_once(report, tmp_path):
    built, _ = report
    drawn, note = drawn_tokenizers(built)
    assert list(drawn) == ["good_64", "broken_64"]
    assert note == ("Not shown, no numbers (reasons in summary.md): skipped gone_256, old_256; failed dead_64.")
    assert R.plot_summary(built, tmp_path / "summary.png").stat().st_size > 0
    only = {**built, "tokenizers": {k: v for k, v in built["tokenizers"].items() if k in drawn}}
    assert drawn_tokenizers(only)[1] is None


def test_a_timing_only_run_shows_its_speed_table_not_no_numbers(tmp_path):
    """`pytest bench --random-weights -m speed`: no quality number, but the terminal shows the medians per image
    (summary.md's speed table) and says the networks had random weights."""
    rec = tmp_path / R.RECORDS_FILE
    R.append_record(rec, {"type": "run", "started": "2025-01-01T00:00:00+00:00", "options": {"device": "cpu"}})
    for tok, encode, decode in (("fast_256", 0.0123, 0.5), ("slow_512", 17.7, 50.66)):
        R.append_record(rec, {"type": "tokenizer", "tokenizer": tok, "facts": {"resolution": 256}})
        for stage, seconds in (("encode", encode), ("decode", decode)):
            R.append_record(rec, {"type": "timing", "tokenizer": tok, "stage": stage, "batch_size": 2,
                                  "median_s": 2 * seconds, "iqr_s": 0.0, "rounds": 3, "device": "cpu",
                                  "random_weights": True})
    built = json.loads(R.build_report(tmp_path)["json"].read_text())
    lines = terminal_lines(built, width=120)
    assert lines[0] == "vtok: no tokenizer produced quality numbers"
    assert lines[1] == "vtok: speed (median per image, pytest-benchmark)"
    assert _row(lines, "fast_256").split() == ["fast_256", "cpu,", "random", "weights", "2", "12.3", "ms", "500", "ms"]
    assert _row(lines, "slow_512").split()[-4:] == ["17.7", "s", "50.7", "s"]
