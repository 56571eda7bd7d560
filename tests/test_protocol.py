"""The protocol record: written once per run, referenced by every row, shown in the report; `python -m reports` (and
its merge) refuse rows of different protocols or tokenizer configs and name the fields that differ. Model-free."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reports.plugin import Recorder
from vision_tokenizers import results as R
from vision_tokenizers.results.merge import merge_reports

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = {"tiny.ckpt": {"path": "/somewhere/tiny.ckpt", "sha256": "ab" * 32}}


def _protocol(dtype: str = "fp32") -> dict:
    return R.make_protocol(dataset={"name": "ds", "files": 2, "file_list_sha256": "f" * 64},
                           metrics={"psnr": {"data_range": 255.0}}, device="cpu", dtype=dtype, resolution=None,
                           generation={"seed": 0})


def _run(d: Path, dtype: str = "fp32", images=("a", "b"), settings: dict | None = None) -> Recorder:
    """What the benchmark records for one tokenizer `t`: protocol, tokenizer, one row per image, dataset."""
    rec = Recorder(d, run={"type": "run", "options": {"dtype": dtype}})
    rec.protocol(_protocol(dtype))
    rec.tokenizer("t", {"kind": "continuous"}, settings=settings or {}, weights=WEIGHTS)
    for i, image_id in enumerate(images):
        rec.image("t", image_id, {"psnr": 20.0 + i}, resolution=16)
    rec.dataset("t", {"bpp": 1.0}, meta={"n": len(images)})
    return rec


def test_protocol_is_recorded_once_and_every_row_references_it(tmp_path: Path):
    rec = _run(tmp_path)
    assert rec.protocol(_protocol()) == rec.protocol_id, "the same protocol again is not written twice"
    records = R.read_records(tmp_path)
    protocols = [r for r in records if r["type"] == "protocol"]
    assert len(protocols) == 1 and protocols[0]["id"] == rec.protocol_id
    fields = protocols[0]["fields"]
    assert {"dataset", "images", "metrics", "libraries", "numerics", "generation"} <= set(fields)
    assert fields["images"]["rounding"].startswith("round(x*255)")
    assert {"torch", "torchmetrics", "torch-fidelity", "lpips"} <= set(fields["libraries"])
    assert {"dtype", "tf32_matmul", "tf32_cudnn", "cudnn_deterministic"} <= set(fields["numerics"])
    rows = [r for r in records if r["type"] in ("image", "dataset")]
    assert rows and all(r["protocol"] == rec.protocol_id and r["config"] == rec.configs["t"] for r in rows)


def test_config_id_follows_checkpoint_hashes_and_settings_not_paths():
    moved = {"tiny.ckpt": {"path": "/elsewhere/tiny.ckpt", "sha256": "ab" * 32}}
    assert R.config_id({}, WEIGHTS) == R.config_id({}, moved)
    assert R.config_id({}, WEIGHTS) != R.config_id({}, {"tiny.ckpt": {"sha256": "cd" * 32}})
    assert R.config_id({"steps": 28}, WEIGHTS) != R.config_id({"steps": 50}, WEIGHTS)


def test_report_shows_the_protocol_and_csv_rows_name_it(tmp_path: Path):
    rec = _run(tmp_path)
    files = R.build_report(tmp_path)
    md = files["markdown"].read_text()
    assert "## Protocol" in md and f"Protocol `{rec.protocol_id}`" in md and "list sha256 `ffffffffffffffff…`" in md
    assert "tf32_matmul False" in md and "tiny.ckpt `abababababab…`" in md
    with open(files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["protocol"] for r in rows} == {rec.protocol_id} and {r["config"] for r in rows} == {rec.configs["t"]}


def _python_m_reports(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "reports", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_python_m_reports_refuses_mixed_protocols_and_names_the_fields(tmp_path: Path):
    _run(tmp_path, "fp32", images=("a", "b"))
    _run(tmp_path, "bf16", images=("b", "c"))  # image b measured again; a and c stay under different protocols
    refused = _python_m_reports(tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert "numerics.dtype: 'bf16' vs 'fp32'" in refused.stderr or "numerics.dtype: 'fp32' vs 'bf16'" in \
        refused.stderr
    assert "--allow-mixed" in refused.stderr and not (tmp_path / "summary.md").exists()
    allowed = _python_m_reports(tmp_path, "--allow-mixed")
    assert allowed.returncode == 0, allowed.stderr
    md = (tmp_path / "summary.md").read_text()
    assert "**Mixed protocols:**" in md and "numerics.dtype" in md


def test_a_newer_protocol_replaces_a_row_whole_so_a_full_rerun_is_not_mixed(tmp_path: Path):
    _run(tmp_path, "fp32")
    _run(tmp_path, "bf16")  # every image measured again
    report = R.aggregate(tmp_path)
    assert report["mixed"] == [] and len(report["protocols"]) == 1
    assert R.build_report(tmp_path)["markdown"].is_file()


def test_merge_refuses_mixed_protocols_and_configs_unless_allowed(tmp_path: Path):
    _run(tmp_path / "a", "fp32", images=("a",))
    _run(tmp_path / "b", "bf16", images=("b",))
    with pytest.raises(R.MixedProtocols, match="numerics.dtype"):
        merge_reports([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _run(tmp_path / "c", "fp32", images=("c",), settings={"steps": 50})
    with pytest.raises(R.MixedProtocols, match=r"tokenizer t: config .* settings.steps"):
        merge_reports([tmp_path / "a", tmp_path / "c"], tmp_path / "out")
    refused = _python_m_reports("merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "out")
    assert refused.returncode == 3 and "numerics.dtype" in refused.stderr
    files = merge_reports([tmp_path / "a", tmp_path / "b"], tmp_path / "out", allow_mixed=True)
    assert "**Mixed protocols:**" in files["markdown"].read_text()
    with pytest.raises(FileExistsError):
        merge_reports([tmp_path / "a"], tmp_path / "out")
