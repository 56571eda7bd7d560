"""torchrun ranks and Slurm arrays (`reports.distributed`): the shard each process measures, one report from rank 0
equal to a single-process run's, and a failing rank failing the whole run without a hang (tiny models on CPU, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reports.distributed import Launch, auto_shard, resolve_shard, torchrun_launch
from tests.helpers import REPO
from tests.test_shards import TOKENIZERS, bench_command, dataset_folder, inception_home, report_json
from vision_tokenizers.results import read_records

SLURM = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
NOT_THIS_SUITE = "not speed and not text"  # the speed tests time, the OCR model is not needed here


# ------------------------------------------------------------------------------------------------ which shard


def test_shard_auto_from_a_slurm_array_task_then_from_rank():
    assert auto_shard(SLURM) == (3, 4), "task 7 of an array 5..8 is shard 3/4"
    assert auto_shard({**SLURM, "SLURM_ARRAY_TASK_ID": "5"}) == (1, 4)
    assert auto_shard({"RANK": "1", "WORLD_SIZE": "3"}) == (2, 3)
    assert auto_shard({**SLURM, "RANK": "0", "WORLD_SIZE": "2"}) == (3, 4), "the array task comes first"


@pytest.mark.parametrize("environ, says", [
    ({}, "SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT"),
    ({"RANK": "0"}, "RANK and WORLD_SIZE"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT is not"),
    ({**SLURM, "SLURM_ARRAY_TASK_ID": "9"}, "not one of the array's 4 tasks"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "expected 0 <= RANK < WORLD_SIZE"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
])
def test_shard_auto_says_what_it_looked_for(environ, says):
    with pytest.raises(ValueError, match="--shard auto") as info:
        auto_shard(environ)
    assert says in str(info.value)


def test_torchrun_ranks_take_their_own_shard():
    assert torchrun_launch({}) is None and torchrun_launch({"RANK": "0", "WORLD_SIZE": "1"}) is None
    launch = torchrun_launch({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert launch == Launch(1, 2, 1) and resolve_shard(None, launch, {}) == "2/2"
    assert resolve_shard("auto", launch, {}) == "2/2"
    with pytest.raises(ValueError, match="leave --shard out"):
        resolve_shard("1/2", launch, {})
    with pytest.raises(ValueError, match="inside a Slurm array task"):
        resolve_shard("auto", launch, SLURM)
    assert resolve_shard("auto", None, SLURM) == "3/4" and resolve_shard("1/2", None, {}) == "1/2"
    assert resolve_shard(None, None, SLURM) is None, "an array task shards only when asked to"


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("PYTEST_", "VTOK_", "SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "TORCHELASTIC_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def test_shard_auto_in_a_slurm_array_task_picks_the_shard(tmp_path: Path):
    data = dataset_folder(tmp_path, 5)
    args = [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "-p", "tests.rank_plugin",
            "--collect-only", "--tokenizers", "magvit2_tiny", "--dataset", str(data), "--shard", "auto"]
    found = subprocess.run(args, cwd=REPO, env=_clean_env(VTOK_TEST_SHOW_SHARD="1", **SLURM), capture_output=True,
                           text=True, timeout=300)
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-3000:]
    from vision_tokenizers.datasets import ImageSet

    expected = ImageSet("images", sorted(data.iterdir()), shard=(3, 4)).ids
    assert f"vtok-test shard: 3/4 ids: {','.join(expected)}" in found.stdout
    missing = subprocess.run(args, cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert missing.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--shard auto: found neither a Slurm array task (SLURM_ARRAY_TASK_ID" in missing.stderr


# ------------------------------------------------------------------------------------------------ torchrun


def torchrun(*args: str, env: dict[str, str], nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m pytest bench ...`; a hang fails the test (timeout), no sleeps."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               *bench_command(*args)[1:]]
    return subprocess.run(command, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One single-process run over 5 images and the same under torchrun with 2 ranks."""
    tmp = tmp_path_factory.mktemp("torchrun")
    # one thread per process, as torchrun sets it: a CPU convolution's float sums depend on the thread count
    env = _clean_env(TORCH_HOME=str(inception_home(tmp / "torch")), OMP_NUM_THREADS="1")
    data = dataset_folder(tmp, 5)
    # one image per batch: on CPU a convolution's float sums can depend on the batch it is in (1e-6 dB in PSNR), and
    # the ranks' batches hold other images than the single run's
    common = ("--tokenizers", TOKENIZERS, "--dataset", str(data), "--batch-size", "1", "-m", NOT_THIS_SUITE)
    single = subprocess.run(bench_command(*common, "--report-dir", str(tmp / "single")), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout[-3000:]
    ranks = torchrun(*common, "--report-dir", str(tmp / "R2"), env=env)
    assert ranks.returncode == 0, ranks.stdout[-4000:] + ranks.stderr[-4000:]
    return tmp, ranks


@pytest.mark.slow
def test_torchrun_writes_one_report_equal_to_a_single_run(two_ranks):
    tmp, ranks = two_ranks
    assert sorted(p.name for p in (tmp / "R2").glob("records*.jsonl")) == ["records.rank0.jsonl",
                                                                           "records.rank1.jsonl"]
    assert (tmp / "single" / "benchmark_results.csv").read_bytes() == (tmp / "R2" /
                                                                       "benchmark_results.csv").read_bytes()
    one, both = report_json(tmp / "single"), report_json(tmp / "R2")
    for name in TOKENIZERS.split(","):
        assert {"fid", "kid", "codebook_usage"} <= set(one["tokenizers"][name]["dataset_metrics"])
        assert one["tokenizers"][name]["dataset_metrics"] == both["tokenizers"][name]["dataset_metrics"], \
            "rFID, KID, usage from the merged per-image statistics: the same bits"
        assert one["tokenizers"][name]["dataset_meta"] == both["tokenizers"][name]["dataset_meta"]
        assert one["tokenizers"][name]["metrics"] == both["tokenizers"][name]["metrics"]
        assert both["tokenizers"][name]["n_images"] == 5
    runs = [r for r in read_records(tmp / "R2") if r["type"] == "run"]
    assert sorted((r["rank"], r["options"]["shard"]) for r in runs) == [(0, "1/2"), (1, "2/2")]
    assert len({r["session"] for r in runs}) == 1, "rank 0's session, on every rank"
    records = read_records(tmp / "R2")
    assert {r["tokenizer"] for r in records if r["type"] == "rank_dataset"} == set(TOKENIZERS.split(","))
    assert ranks.stdout.count("vtok report: ") == 1, "only rank 0 builds and announces the report"
    assert "measures shard 2/2 only: dataset metrics are reduced" in ranks.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["error", "crash"])
def test_a_failing_rank_fails_the_run_without_a_hang(tmp_path: Path, mode):
    data = dataset_folder(tmp_path, 2)
    env = _clean_env(TORCH_HOME=str(tmp_path / "torch"), VTOK_TEST_RANK_FAIL=f"1:{mode}")
    proc = torchrun("-p", "tests.rank_plugin", "--tokenizers", "magvit2_tiny", "--dataset", str(data), "-m",
                    "quality", "--report-dir", str(tmp_path / "R"), env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    if mode == "error":  # rank 1 reaches the end: rank 0 names it, fails with it and still writes the report
        assert "injected failure on rank 1" in out
        assert "vtok: rank 1 of 2 ended with exit status 1" in out, out[-4000:]
        assert (tmp_path / "R" / "summary.md").is_file()
    else:  # rank 1 dies before the final barrier: torchrun (or the barrier) ends rank 0
        assert "injected crash on rank 1" in out
        assert "exitcode  : 3" in out, out[-4000:]
