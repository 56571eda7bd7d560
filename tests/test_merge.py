"""`python -m reports merge` never drops rows silently: sources holding different rows for the same (tokenizer, image)
are refused with the fields that differ, `--prefer first|last` keeps one side on purpose and says how many rows it
dropped, identical rows are merged and counted. Model-free: the sources are written with the Recorder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reports.__main__ import main as reports_main
from reports.plugin import Recorder
from tests.test_protocol import _protocol, _python_m_reports
from vision_tokenizers import results as R
from vision_tokenizers.results.merge import DROPPED_FILE, MergeConflict, merge_reports

WEIGHTS = {"tiny.ckpt": {"sha256": "ab" * 32}}


def _run(d: Path, dtype: str = "fp32", images=("a", "b"), settings: dict | None = None, shift: float = 0.0) -> str:
    """One tokenizer `t` over `images`: protocol, tokenizer record, a row, a reconstruction PNG and token ids per
    image. `dtype` changes the protocol; `shift` the values (a bf16 run does not give fp32's numbers)."""
    rec = Recorder(d, run={"type": "run", "options": {"dtype": dtype}})
    pid = rec.protocol(_protocol(dtype))
    rec.tokenizer("t", {"kind": "discrete"}, settings=settings or {}, weights=WEIGHTS)
    for image_id in images:
        base = float(ord(image_id[0]) - ord("a"))
        ids = (np.arange(4) + int(base + shift)) % 8
        stats = rec.statistics("t", image_id, {"ids": ids}, {"ids": 8})
        recon = np.full((16, 16, 3), int(40 * base + 100 * shift) % 256, dtype=np.uint8)
        rec.image("t", image_id, {"psnr": 20.0 + base + shift, "ssim": 0.5 + shift / 10}, resolution=16,
                  dataset="ds", recon=recon, stats=stats)
    rec.dataset("t", {"bpp": 1.0}, meta={"n": len(images)})
    return pid


def _report(d: Path) -> dict:
    return json.loads((d / "report.json").read_text())


def test_fp32_and_bf16_of_the_same_images_refused_naming_dtype_then_merged_with_prefer(tmp_path: Path, capsys):
    a, b = tmp_path / "fp32", tmp_path / "bf16"
    _run(a, "fp32")
    bf16 = _run(b, "bf16", shift=0.5)
    refused = _python_m_reports("merge", a, b, "--out", tmp_path / "m")  # the real command line
    assert refused.returncode == 3, refused.stderr
    error = refused.stderr.strip().splitlines()
    assert error[0].startswith("error: refusing to merge") and "--prefer" in error[0]
    assert f"tokenizer t: 2 image(s) measured in both {a} and {b}" in refused.stderr
    assert "numerics.dtype: 'fp32' vs 'bf16'" in refused.stderr
    assert not R.record_files(tmp_path / "m"), "nothing written"

    with pytest.warns(UserWarning, match=r"--prefer last: 2 row\(s\) of t"):
        assert reports_main(["merge", str(a), str(b), "--out", str(tmp_path / "m"), "--prefer", "last"]) == 0
    report = _report(tmp_path / "m")
    merge, = report["merges"]
    assert merge["prefer"] == "last" and merge["rows_dropped"] == 2 and merge["duplicates_merged"] == 0
    assert merge["dropped"] == [{"tokenizer": "t", "rows": 2, "from": str(a), "kept_from": str(b),
                                 "differences": ["numerics.dtype: 'fp32' vs 'bf16'"]}]
    summary = (tmp_path / "m" / "summary.md").read_text()
    assert f"--prefer last: 2 row(s) of t from {a} dropped, those of {b} kept" in summary.replace("\\", "")
    assert list(report["protocols"]) == [bf16] and report["mixed"] == []
    t = report["tokenizers"]["t"]
    assert t["n_images"] == 2 and t["metrics"]["psnr"]["mean"] == pytest.approx(21.0), "bf16's rows: 20.5, 21.5"
    dropped = [json.loads(line) for line in (tmp_path / "m" / DROPPED_FILE).read_text().splitlines()]
    assert [(r["image_id"], r["merge_source"], r["metrics"]["psnr"]) for r in dropped] == [
        ("a", str(a), 20.0), ("b", str(a), 21.0)], "the dropped rows are kept aside, not lost"
    assert not any(r.get("type") == "image" and r["metrics"]["psnr"] in (20.0, 21.0)
                   for r in R.read_records(tmp_path / "m")), "and are not in the merged records"

    # the kept side gives the numbers that side alone gives, dataset statistics and PNGs included
    merge_reports([b], tmp_path / "b_alone")
    alone = _report(tmp_path / "b_alone")["tokenizers"]["t"]
    assert t["metrics"] == alone["metrics"] and t["dataset_metrics"] == alone["dataset_metrics"]
    assert {"codebook_usage", "entropy_bits"} <= set(t["dataset_metrics"])
    for image_id in ("a", "b"):
        assert (tmp_path / "m" / "recon" / "t" / f"{image_id}.png").read_bytes() == \
            (b / "recon" / "t" / f"{image_id}.png").read_bytes()
    capsys.readouterr()


def test_prefer_first_keeps_the_first_sources_rows_and_files(tmp_path: Path):
    a, b = tmp_path / "fp32", tmp_path / "bf16"
    fp32 = _run(a, "fp32")
    _run(b, "bf16", shift=0.5)
    with pytest.warns(UserWarning, match="--prefer first"):
        merge_reports([a, b], tmp_path / "m", prefer="first")
    report = _report(tmp_path / "m")
    assert report["merges"][0]["rows_dropped"] == 2 and list(report["protocols"]) == [fp32]
    assert report["tokenizers"]["t"]["metrics"]["psnr"]["mean"] == pytest.approx(20.5)
    for sub in ("recon/t/a.png", "recon/t/b.png"):
        assert (tmp_path / "m" / sub).read_bytes() == (a / sub).read_bytes(), "the kept row's PNG, not the later one"
    stats, = (tmp_path / "m").glob("stats/t/*/b.npz")
    assert stats.read_bytes() == next(a.glob("stats/t/*/b.npz")).read_bytes()


def test_identical_rows_in_several_sources_are_merged_and_counted(tmp_path: Path):
    _run(tmp_path / "one", images=("a", "b"))
    _run(tmp_path / "two", images=("b", "c"))  # the same protocol, config and values for b
    with pytest.warns(UserWarning, match=r"1 row\(s\) of t held identically by several sources"):
        files = merge_reports([tmp_path / "one", tmp_path / "two"], tmp_path / "m")
    report = _report(tmp_path / "m")
    merge, = report["merges"]
    assert merge["duplicates_merged"] == 1 and merge["rows_dropped"] == 0 and merge["prefer"] is None
    t = report["tokenizers"]["t"]
    assert t["n_images"] == 3 and t["metrics"]["psnr"]["mean"] == pytest.approx(21.0)
    assert sum(r["type"] == "image" and r["image_id"] == "b" for r in R.read_records(tmp_path / "m")) == 1
    assert "1 row(s) of t held identically by several sources" in files["markdown"].read_text()
    assert not (tmp_path / "m" / DROPPED_FILE).exists()


def test_conflicts_name_config_fields_and_differing_values(tmp_path: Path):
    _run(tmp_path / "steps28", settings={"steps": 28})
    _run(tmp_path / "steps50", settings={"steps": 50})
    with pytest.raises(MergeConflict, match=r"tokenizer t: 2 image\(s\).*config settings\.steps: 28 vs 50"):
        merge_reports([tmp_path / "steps28", tmp_path / "steps50"], tmp_path / "m")
    _run(tmp_path / "again", shift=0.25)  # same protocol and config, other numbers (a nondeterministic kernel)
    _run(tmp_path / "first")
    with pytest.raises(MergeConflict, match="same protocol and config, different values of psnr, ssim"):
        merge_reports([tmp_path / "first", tmp_path / "again"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_the_mixed_protocol_check_sees_every_kept_source_row(tmp_path: Path):
    """fp32 over a, b and bf16 over b, c: preferring the first keeps fp32's a, b and bf16's c, which are mixed."""
    _run(tmp_path / "fp32", "fp32", images=("a", "b"))
    _run(tmp_path / "bf16", "bf16", images=("b", "c"), shift=0.5)
    with pytest.raises(R.MixedProtocols, match="numerics.dtype"):
        merge_reports([tmp_path / "fp32", tmp_path / "bf16"], tmp_path / "m", prefer="first")
    with pytest.warns(UserWarning, match=r"--prefer first: 1 row\(s\) of t"):
        merge_reports([tmp_path / "fp32", tmp_path / "bf16"], tmp_path / "m", prefer="first", allow_mixed=True)
    report = _report(tmp_path / "m")
    assert report["tokenizers"]["t"]["n_images"] == 3 and report["merges"][0]["rows_dropped"] == 1
    assert any("numerics.dtype" in line for line in report["mixed"])
