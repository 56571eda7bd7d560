"""--shard i/N and `python -m reports merge`: the split is deterministic and complete, and two shards merged give
bit for bit the rFID, KID, codebook statistics and means of one run (tiny models, a random InceptionV3 placed where
torch-fidelity looks for its weights)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.images import parse_shard
from tests.helpers import REPO, save_random_inception, shared_path
from vision_tokenizers import metrics as M
from vision_tokenizers.datasets import ImageSet, shard_indices
from vision_tokenizers.results import read_records

TOKENIZERS = "magvit2_tiny,titok_tiny"


def inception_home(root: Path) -> Path:
    """A TORCH_HOME whose hub/checkpoints holds a random torch-fidelity InceptionV3 under the released file name
    (no AlexNet, so LPIPS is skipped with its reason: the FID plumbing is what these tests are about)."""
    checkpoints = root / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    save_random_inception(checkpoints / M.INCEPTION_FILE)
    return root


def bench_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "--weights-dir",
            str(shared_path("golden")), "--offline", "--benchmark-disable", "-q", *args]


def bench_env(torch_home: Path) -> dict[str, str]:
    """A clean environment (no PYTEST_* of an xdist parent, no VTOK_*) with the random Inception's TORCH_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    return {**env, "TORCH_HOME": str(torch_home)}


def dataset_folder(root: Path, n: int) -> Path:
    folder = root / "images"
    folder.mkdir()
    for path in sorted(shared_path("images", "coco_val2017").glob("*.jpg"))[:n]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def report_json(report_dir: Path) -> dict:
    return json.loads((report_dir / "report.json").read_text())


# ------------------------------------------------------------------------------------------------ the split


def test_shards_partition_the_dataset_whatever_the_listing_order():
    ids = [f"{i:012d}" for i in range(23)]
    shards = [shard_indices(ids, i, 3) for i in (1, 2, 3)]
    assert sorted(k for s in shards for k in s) == list(range(23)), "every file in exactly one shard"
    assert {len(s) for s in shards} <= {7, 8}, "balanced to within one file"
    shuffled = random.Random(0).sample(ids, len(ids))
    for i, shard in enumerate(shards, 1):
        assert {ids[k] for k in shard} == {shuffled[k] for k in shard_indices(shuffled, i, 3)}, \
            "membership depends on the ids, not on the order they were listed in"
    assert shard_indices(ids, 1, 1) == list(range(23))


@pytest.mark.parametrize("bad", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_option_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"expected i/N with 1 <= i <= N"):
        parse_shard(bad)
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None


def test_file_list_hash_is_the_same_on_any_mount_point_and_follows_the_files(tmp_path: Path):
    a, b = tmp_path / "a" / "ds", tmp_path / "b" / "ds"
    for folder in (a, b):
        folder.mkdir(parents=True)
        for name in ("x.png", "y.png"):
            (folder / name).write_bytes(b"12345")
    same = [ImageSet("ds", sorted(f.iterdir())) for f in (a, b)]
    assert same[0].file_list_sha256 == same[1].file_list_sha256 and same[0].num_files == 2
    (b / "y.png").write_bytes(b"123456")
    assert ImageSet("ds", sorted(b.iterdir())).file_list_sha256 != same[0].file_list_sha256
    sharded = ImageSet("ds", sorted(a.iterdir()), shard=(1, 2))
    assert len(sharded.paths) == 1 and sharded.file_list_sha256 == same[0].file_list_sha256, \
        "a shard records the whole dataset's identity, so shards can be checked against each other"


# ----------------------------------------------------------------------------------- 2 shards merged == 1 run


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """One run over 4 images, the same as shards 1/2 and 2/2 in their own directories, and their merge."""
    tmp = tmp_path_factory.mktemp("shards")
    env = bench_env(inception_home(tmp / "torch"))
    data = dataset_folder(tmp, 4)
    common = ("--tokenizers", TOKENIZERS, "--dataset", str(data), "--batch-size", "2")
    procs = {}
    for name, extra in (("single", ()), ("s1", ("--shard", "1/2")), ("s2", ("--shard", "2/2"))):
        procs[name] = subprocess.run(bench_command(*common, *extra, "--report-dir", str(tmp / name)), cwd=REPO,
                                     env=env, capture_output=True, text=True, timeout=600)
        assert procs[name].returncode == 0, procs[name].stdout[-3000:]
    merge = subprocess.run([sys.executable, "-m", "reports", "merge", str(tmp / "s1"), str(tmp / "s2"), "--out",
                            str(tmp / "merged")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert merge.returncode == 0, merge.stderr[-3000:]
    return tmp, procs


def test_two_shards_merged_equal_one_run_bit_for_bit(sharded):
    tmp, _ = sharded
    single, merged = report_json(tmp / "single"), report_json(tmp / "merged")
    shards = [report_json(tmp / s) for s in ("s1", "s2")]
    for name in TOKENIZERS.split(","):
        one, both = single["tokenizers"][name], merged["tokenizers"][name]
        assert {"fid", "kid", "kid_std", "codebook_usage", "entropy_bits", "perplexity", "bpp_measured"} <= set(
            one["dataset_metrics"])
        assert one["dataset_metrics"] == both["dataset_metrics"], "rFID, KID, usage: the same bits"
        assert one["dataset_meta"] == both["dataset_meta"]
        assert one["metrics"] == both["metrics"], "means, std and bootstrap intervals"
        assert one["n_images"] == both["n_images"] == 4
        assert [s["tokenizers"][name]["n_images"] for s in shards] == [2, 2]
        per_shard = [s["tokenizers"][name]["dataset_metrics"]["fid"] for s in shards]
        assert one["dataset_metrics"]["fid"] != pytest.approx(sum(per_shard) / 2), "never the mean of shard FIDs"
    assert (tmp / "single" / "benchmark_results.csv").read_text() == (tmp / "merged" /
                                                                      "benchmark_results.csv").read_text()
    for name in ("summary.md", "summary.png", "summary_results.csv", "grid.png", "position_entropy.png",
                 "grid_worst_psnr.png", "report.json"):
        assert (tmp / "merged" / name).stat().st_size > 0, name
    assert len(list((tmp / "merged" / "stats").rglob("*.npz"))) == 8, "every image's statistics travel along"


def test_shards_share_one_protocol_and_record_the_split(sharded):
    tmp, _ = sharded
    protocols = [[r for r in read_records(tmp / d) if r["type"] == "protocol"] for d in ("single", "s1", "s2")]
    assert len({p[0]["id"] for p in protocols}) == 1, "--shard is not part of the protocol"
    dataset = protocols[0][0]["fields"]["dataset"]
    assert dataset["files"] == 4 and len(dataset["file_list_sha256"]) == 64
    runs = [r for r in read_records(tmp / "s2") if r["type"] == "run"]
    assert runs[0]["options"]["shard"] == "2/2"
    summary = (tmp / "merged" / "summary.md").read_text()
    assert "Merged from 2 report directories" in summary and "KID ↓" in summary


def test_merging_an_incomplete_set_of_shards_says_so(sharded, tmp_path: Path):
    tmp, _ = sharded
    proc = subprocess.run([sys.executable, "-m", "reports", "merge", str(tmp / "s1"), "--out", str(tmp_path / "m")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "shard(s) 2/2 missing" in proc.stderr
    assert "shard(s) 2/2 missing" in (tmp_path / "m" / "summary.md").read_text()
    assert report_json(tmp_path / "m")["tokenizers"]["magvit2_tiny"]["n_images"] == 2
