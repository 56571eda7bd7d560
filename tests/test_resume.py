"""Interrupted runs lose nothing: after SIGKILL or SIGINT mid-tokenizer the same command computes only the missing
(tokenizer, image) pairs and ends with the report an uninterrupted run writes; a torn last JSONL line is dropped and
reported; SIGINT writes the report of what is done before exiting."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reports.plugin import Recorder
from tests import interrupt_plugin
from tests.helpers import REPO
from tests.test_shards import bench_command, bench_env, dataset_folder, inception_home, report_json
from vision_tokenizers import results as R
from vision_tokenizers.results.sections import INTERRUPTED_NOTE

N_IMAGES = 5
TOKENIZER = "magvit2_tiny"


def image_records(report_dir: Path) -> list[dict]:
    return [r for r in R.read_records_checked(report_dir)[0] if r["type"] == "image"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dataset, the environment, the command and one uninterrupted run of it (the reference)."""
    tmp = tmp_path_factory.mktemp("resume")
    env = bench_env(inception_home(tmp / "torch"))
    data = dataset_folder(tmp, N_IMAGES)

    def command(report_dir: Path) -> list[str]:
        return bench_command("--tokenizers", TOKENIZER, "--dataset", str(data), "--batch-size", "1",
                             "--report-dir", str(report_dir))

    ref = subprocess.run(command(tmp / "reference"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stdout[-3000:]
    return tmp, env, command


# The interrupted run starts with SIGINT ignored, as a job started with `&` by a non-interactive shell inherits it,
# however this suite was started: the same path every time, and tests/interrupt_plugin.py must restore the default.
SIGINT_IGNORED = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "os.execv(sys.argv[1], sys.argv[1:])"]


def interrupt(command: list[str], env: dict, sig: signal.Signals, after: int) -> subprocess.CompletedProcess:
    """Run the command with tests/interrupt_plugin.py, which makes the run send `sig` to itself right after the
    `after`-th image record it writes (mid-tokenizer: batches of 1). No polling: the point is exact."""
    return subprocess.run([*SIGINT_IGNORED, *command, "-p", "tests.interrupt_plugin"], cwd=REPO,
                          env={**env, interrupt_plugin.ENV: f"{sig.name}:{after}"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)


def assert_same_report(report_dir: Path, reference: Path) -> None:
    ours, ref = report_json(report_dir)["tokenizers"][TOKENIZER], report_json(reference)["tokenizers"][TOKENIZER]
    assert {"fid", "kid", "codebook_usage", "entropy_bits"} <= set(ours["dataset_metrics"])
    assert ours["dataset_metrics"] == ref["dataset_metrics"], "rFID, KID, usage: the same bits"
    assert ours["metrics"] == ref["metrics"] and ours["n_images"] == ref["n_images"] == N_IMAGES
    assert (report_dir / "benchmark_results.csv").read_text() == (reference / "benchmark_results.csv").read_text()


def test_sigint_then_sigkill_then_rerun_computes_each_image_once_and_equals_an_uninterrupted_run(setup):
    """One chain, to keep the suite fast: Ctrl-C after 2 images, the same command killed (-9) after one more image
    with a torn line left behind, then the same command to the end."""
    tmp, env, command = setup
    report = tmp / "interrupted"
    stopped = interrupt(command(report), env, signal.SIGINT, after=2)
    assert stopped.returncode == 2 and "KeyboardInterrupt" in stopped.stdout, stopped.stdout[-3000:]
    first = {r["image_id"] for r in image_records(report)}
    assert len(first) == 2, "interrupted mid-tokenizer, right after the second image"
    summary = (report / "summary.md").read_text()
    assert INTERRUPTED_NOTE in summary and f"{len(first)} image reconstruction" in summary, "SIGINT wrote the report"
    assert report_json(report)["tokenizers"][TOKENIZER]["n_images"] == len(first)

    killed = interrupt(command(report), env, signal.SIGKILL, after=1)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    done = {r["image_id"] for r in image_records(report)}
    assert first < done and len(done) == 3 and len(image_records(report)) == len(done), \
        "the second run computed only images the first had not"
    torn_line = b'{"type":"image","tokenizer":"magvit2_tiny","image_id":"torn","metr'
    with open(report / R.RECORDS_FILE, "ab") as f:  # what a kill during a write leaves behind
        f.write(torn_line)

    rerun = subprocess.run(command(report), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    missing = N_IMAGES - len(done)
    assert f"{TOKENIZER}: resumed {len(done)} images from {report}; computing the {missing} missing" in rerun.stdout
    records = image_records(report)
    assert len(records) == N_IMAGES and {r["image_id"] for r in records} == {r["image_id"] for r in image_records(
        tmp / "reference")}, "each image computed exactly once over the three runs"
    assert_same_report(report, tmp / "reference")
    summary = (report / "summary.md").read_text()
    assert INTERRUPTED_NOTE not in summary
    assert (report / "records.jsonl.torn").read_bytes() == torn_line + b"\n", "dropped from the JSONL, kept aside"
    assert f"a torn last line ({len(torn_line)} bytes) of `records.jsonl` left by a killed run was dropped" in summary


# ------------------------------------------------------------------------------------------------- the store


def _recorded(report_dir: Path, stats: bool = True) -> Recorder:
    rec = Recorder(report_dir)
    rec.protocol({"dataset": {"name": "ds"}})
    rec.tokenizer("t", {}, weights={"w": {"sha256": "00"}})
    for image_id in ("a", "b"):
        extra = {"stats": rec.statistics("t", image_id, {"ids": np.arange(4)}, {"ids": 8})} if stats else {}
        rec.image("t", image_id, {"psnr": 1.0, "bpp": 1.0}, resolution=16, **extra)
    return rec


def test_resumable_images_need_the_same_protocol_config_resolution_and_readable_statistics(tmp_path: Path):
    rec = _recorded(tmp_path)
    query = {"ids": ["a", "b", "c"], "resolution": 16, "image_metrics": ["psnr"], "stats": {"ids"}}
    assert set(rec.resumable("t", **query)) == {"a", "b"}, "c was never measured"
    assert rec.resumable("t", **{**query, "resolution": 32}) == {}
    assert rec.resumable("t", **{**query, "image_metrics": ["psnr", "lpips"]}) == {}
    b_stats, = tmp_path.glob("stats/t/*/b.npz")  # under the tokenizer's config id
    b_stats.write_bytes(b"PK\x03\x04 torn")  # statistics unreadable: b again
    assert set(rec.resumable("t", **query)) == {"a"}
    other = Recorder(tmp_path, filename="records.other.jsonl")
    other.protocol({"dataset": {"name": "another"}})
    other.tokenizer("t", {}, weights={"w": {"sha256": "00"}})
    assert other.resumable("t", **query) == {}, "another protocol measures every image again"


def test_a_torn_last_line_is_moved_aside_and_recorded(tmp_path: Path):
    path = tmp_path / R.RECORDS_FILE
    R.append_record(path, {"type": "image", "tokenizer": "t", "image_id": "a", "metrics": {"psnr": 1.0}})
    with open(path, "ab") as f:
        f.write(b'{"type":"ima')
    with pytest.warns(UserWarning, match="truncated last line"):
        R.read_records(path)
    Recorder(tmp_path).ensure()
    records, problems = R.read_records_checked(tmp_path)
    assert problems == [] and (tmp_path / "records.jsonl.torn").read_bytes() == b'{"type":"ima\n'
    assert [r["type"] for r in records] == ["image", "run", "store"]
    assert records[-1]["event"] == "torn_line_dropped" and records[-1]["bytes"] == len(b'{"type":"ima')


def test_the_interrupt_plugin_reads_a_signal_and_a_record_count():
    assert interrupt_plugin.parse("SIGINT:2") == (signal.SIGINT, 2)
    assert interrupt_plugin.parse("sigkill:1") == (signal.SIGKILL, 1)
    for bad in ("SIGINT", "SIGNOPE:1", "SIGINT:0", "SIGINT:x", ""):
        with pytest.raises(pytest.UsageError, match="expected SIGNAL:K"):
            interrupt_plugin.parse(bad)
