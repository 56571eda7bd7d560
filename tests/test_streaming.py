"""The streaming image path (`vision_tokenizers.loader`): DataLoader workers give the serial pass's batches bit for bit
and unreadable files as items; the benchmark's CSV does not depend on --workers. And `--dataset imagenet`: the
ILSVRC2012 validation files, flat or in synset folders, an incomplete folder measured as a recorded subset."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import REPO, shared_path
from vision_tokenizers import loader
from vision_tokenizers.datasets import IMAGENET_NAME, ImageSet, imagenet_file, open_dataset, resolve_dataset
from vision_tokenizers.evaluate import evaluate
from vision_tokenizers.images import BadImage, load_image, prepare_image
from vision_tokenizers.registry import load


def jpeg(path: Path, seed: int, size: tuple[int, int] = (96, 72)) -> Path:
    """A small photo-like JPEG (smooth colours plus grain), different for every seed."""
    rng = np.random.default_rng(seed)
    smooth = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    grain = rng.integers(-10, 11, (size[1], size[0], 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.asarray(smooth).astype(int) + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def folder_with_bad_files(root: Path, n: int = 9, bad: tuple[int, ...] = (2, 5)) -> Path:
    """n files named f00..; those at the positions `bad` cannot be decoded."""
    for k in range(n):
        path = root / f"f{k:02d}.jpg"
        if k in bad:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not a jpeg")
        else:
            jpeg(path, k, (96 + 8 * k, 72))
    return root


def serial_batches(paths: list[Path], ids: list[str], resolution: int, batch_size: int):
    """The serial pass the loader replaces: decode and crop each file in order, leave out the unreadable ones, cut
    the rest into batches."""
    good = []
    for image_id, path in zip(ids, paths, strict=True):
        try:
            good.append((image_id, np.asarray(prepare_image(load_image(path), resolution))))
        except BadImage:
            continue
    for start in range(0, len(good), batch_size):
        part = good[start:start + batch_size]
        yield [i for i, _ in part], torch.from_numpy(np.stack([a for _, a in part])).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------ the loader


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_gives_the_serial_batches_and_unreadable_files_as_items(tmp_path, workers):
    images = ImageSet("ds", sorted(folder_with_bad_files(tmp_path).iterdir()))
    items = list(loader.stream(images.items(), 32, 3, workers=workers))
    unreadable = [item for item in items if isinstance(item, loader.Unreadable)]
    assert [u.image_id for u in unreadable] == ["f02", "f05"]
    assert all("cannot be decoded" in u.reason and "\n" not in u.reason for u in unreadable)
    got = [item for item in items if not isinstance(item, loader.Unreadable)]
    expected = list(serial_batches(images.paths, images.ids, 32, 3))
    assert [ids for ids, _ in got] == [ids for ids, _ in expected] == [["f00", "f01", "f03"], ["f04", "f06", "f07"],
                                                                       ["f08"]]
    for (_, pixels), (_, reference) in zip(got, expected, strict=True):
        assert pixels.dtype == torch.uint8 and pixels.is_contiguous() and torch.equal(pixels, reference)
    # `ImageSet.batches` hands the unreadable ones to a callback, in this process, and keeps them in `bad`
    seen: list[str] = []
    wanted = ["f01", "f02", "f08"]
    assert [ids for ids, _ in images.batches(32, 2, ids=wanted, workers=workers,
                                             on_bad=lambda i, reason: seen.append(i))] == [["f01", "f08"]]
    assert seen == ["f02"] and list(images.bad) == ["f02"]


def test_stream_decodes_only_as_far_as_it_is_read(tmp_path, monkeypatch):
    """Nothing holds the dataset: in-process, the first batch of 2 has decoded 2 files, not all 40."""
    path = jpeg(tmp_path / "one.jpg", 0)
    decoded = []

    def counting(path, resolution):
        decoded.append(path)
        return crop(path, resolution)
    crop = loader.crop_file
    monkeypatch.setattr(loader, "crop_file", counting)
    stream = loader.stream([(f"i{k}", path) for k in range(40)], 16, 2)
    ids, pixels = next(stream)
    assert ids == ["i0", "i1"] and pixels.shape == (2, 3, 16, 16) and len(decoded) == 2
    stream.close()


def test_batches_hand_freed_memory_back_only_after_the_consumer_and_once_the_process_has_grown(monkeypatch):
    """`malloc_trim` runs between batches (after the consumer is done with one) when the resident size has grown
    TRIM_MARGIN beyond its size after the last trim; what a trim cannot hand back becomes the new floor."""
    m, real_size = loader.TRIM_MARGIN, loader.resident_bytes
    # read after each batch, and once more after each trim: floor 100; 100+m not beyond it; 100+m+1 -> trim -> 90;
    # 90+m not beyond; 90+m+1 -> trim -> 95+m, the new floor; 95
    sizes = iter([100, 100 + m, 100 + m + 1, 90, 90 + m, 90 + m + 1, 95 + m, 95])
    events: list[str] = []

    def fake_stream(items, resolution, batch_size, **kwargs):
        for k in range(6):
            yield [f"i{k}"], torch.zeros(1, 3, resolution, resolution, dtype=torch.uint8)
    monkeypatch.setattr(loader, "stream", fake_stream)
    monkeypatch.setattr(loader, "resident_bytes", lambda: next(sizes))
    monkeypatch.setattr(loader, "_MALLOC_TRIM", lambda pad: events.append("trim"))
    for ids, _ in loader.batches([], 8, 1):
        events.append(ids[0])
    assert events == ["i0", "i1", "i2", "trim", "i3", "i4", "trim", "i5"]
    assert next(sizes, None) is None, "one reading after each batch and each trim"
    assert real_size() is None or real_size() > 1 << 20, "the real reading: this process's resident bytes"


def test_default_workers_is_min_8_and_the_cpus():
    assert 1 <= loader.default_workers() <= 8
    assert loader.default_workers() == min(8, len(os.sched_getaffinity(0)))


# ------------------------------------------------------------------------------------------------ the benchmark


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    command = [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "--weights-dir",
               str(shared_path("golden")), "--offline", "--benchmark-disable", "-q", "--tokenizers", "magvit2_tiny",
               *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**clean, **(env or {})},
                          timeout=900)


def test_bench_csv_does_not_depend_on_workers_and_equals_the_serial_pass(tmp_path):
    folder = folder_with_bad_files(tmp_path / "images", n=8, bad=(3,))
    csvs = {}
    for workers in ("0", "2"):
        report = tmp_path / f"report{workers}"
        proc = bench("--dataset", str(folder), "--report-dir", str(report), "--workers", workers, "--batch-size", "3")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert proc.stdout.count(f"{folder / 'f03.jpg'}: cannot be decoded") == 1  # one line for the bad file
        csvs[workers] = (report / "benchmark_results.csv").read_text(encoding="utf-8")
        bad = json.loads((report / "report.json").read_text())["tokenizers"]["magvit2_tiny"]["bad_inputs"]
        assert [b["image_id"] for b in bad] == ["f03"]
    assert csvs["0"] == csvs["2"]
    rows = list(csv.DictReader(csvs["0"].splitlines()))
    # the numbers are those of the serial pass the loader replaced, bit for bit (same batches, same pixels)
    images = ImageSet("images", sorted(folder.iterdir()))
    tokenizer = load("magvit2_tiny", weights_dir=shared_path("golden"), offline=True)
    reference = evaluate(tokenizer, serial_batches(images.paths, images.ids, tokenizer.resolution, 3))
    assert [r["image_id"] for r in rows] == list(reference.per_image) == [f"f{k:02d}" for k in (0, 1, 2, 4, 5, 6, 7)]
    for row in rows:
        assert float(row["psnr"]) == reference.per_image[row["image_id"]]["psnr"]
        assert float(row["ssim"]) == reference.per_image[row["image_id"]]["ssim"]


def test_bench_refuses_a_negative_workers_count_and_fails_when_no_file_is_readable(tmp_path):
    proc = bench("--dataset", "samples", "--workers", "-1", "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 4 and "--workers -1: expected 0" in proc.stderr
    folder = folder_with_bad_files(tmp_path / "images", n=2, bad=(0, 1))
    proc = bench("--dataset", str(folder), "--report-dir", str(tmp_path / "report"), "-m", "quality")
    assert proc.returncode == 1 and "no readable image in dataset images: 2 unreadable, 2 files" in proc.stdout


# ------------------------------------------------------------------------------------------------ ImageNet


def imagenet_folder(root: Path, numbers: list[int], synsets: bool) -> Path:
    """Generated JPEGs named like ILSVRC2012 validation files (the same bytes in both layouts), plus files that are
    not validation images (ignored)."""
    for k in numbers:
        sub = f"n{1440764 + k % 2:08d}" if synsets else ""
        jpeg(root / sub / imagenet_file(k), k)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench\n")
    jpeg(root / "cover.jpg", 99)
    return root


def open_imagenet(**kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        images = open_dataset("imagenet", warn=messages.append, **kwargs)
    assert not caught
    return images, messages


def test_imagenet_flat_or_in_synset_folders_sorted_by_file_name(tmp_path, monkeypatch):
    numbers = [1, 2, 3, 4, 5, 6]
    flat = imagenet_folder(tmp_path / "flat", numbers, synsets=False)
    nested = imagenet_folder(tmp_path / "nested", numbers, synsets=True)
    a, warned_a = open_imagenet(dataset_dir=flat)
    monkeypatch.setenv("VTOK_IMAGENET", str(nested))
    b, warned_b = open_imagenet()
    names = [imagenet_file(k) for k in numbers]
    for images in (a, b):
        assert images.name == IMAGENET_NAME and [p.name for p in images.paths] == names
        assert images.ids == [n.removesuffix(".JPEG") for n in names]
    assert [p.parent.name for p in b.paths] == ["n01440765", "n01440764"] * 3  # across folders, by file name
    assert a.file_list_sha256 == b.file_list_sha256 and a.id_list_sha256 == b.id_list_sha256
    assert a.protocol_fields == b.protocol_fields == {
        "standard": "ILSVRC2012 validation, 50,000 images, ADM centre crop at 256 px",
        "subset": "the first 6 of 50,000 (by file name)"}
    (message,) = warned_a
    assert message.startswith(f"found 6 of 50,000 ILSVRC2012_val_*.JPEG in {flat}; missing e.g. "
                              "ILSVRC2012_val_00000007.JPEG, ILSVRC2012_val_00000008.JPEG, "
                              "ILSVRC2012_val_00000009.JPEG ... (49,994 in all); measuring the 6 found")
    assert "not the standard 50,000" in message and warned_b == [message.replace(str(flat), str(nested))]


def test_imagenet_with_holes_and_num_images(tmp_path):
    folder = imagenet_folder(tmp_path / "val", [1, 2, 4, 7], synsets=True)
    first_two, warned = open_imagenet(dataset_dir=folder, num_images=2)
    assert first_two.ids == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"] and warned == []
    assert first_two.protocol_fields["subset"] == "the first 2 of 50,000 (by file name)"
    three, (message,) = open_imagenet(dataset_dir=folder, num_images=3)
    assert three.ids[-1] == "ILSVRC2012_val_00000004" and three.num_files == 3
    assert "found 4 of 50,000" in message and "missing e.g. ILSVRC2012_val_00000003.JPEG" in message
    assert "--num-images 3 uses the first 3 found" in message
    assert three.protocol_fields["subset"] == "3 of 50,000 (the folder lacks 49,996)"
    sharded, _ = open_imagenet(dataset_dir=folder, shard=(1, 2))
    assert sharded.num_files == 4 and len(sharded.ids) == 2  # the dataset record describes the whole selection


def test_imagenet_folder_problems_are_one_line_each(tmp_path, monkeypatch):
    monkeypatch.delenv("VTOK_IMAGENET", raising=False)
    with pytest.raises(FileNotFoundError, match="pass --dataset-dir DIR or set VTOK_IMAGENET"):
        resolve_dataset("imagenet")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        resolve_dataset("imagenet", tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no ILSVRC2012_val_"):
        resolve_dataset("imagenet", tmp_path / "empty")
    twice = imagenet_folder(tmp_path / "twice", [1, 2], synsets=True)
    jpeg(twice / "n99999999" / imagenet_file(2), 2)
    with pytest.raises(ValueError, match="ILSVRC2012_val_00000002.JPEG is in .* twice"):
        resolve_dataset("imagenet", twice)
    beyond = imagenet_folder(tmp_path / "beyond", [1], synsets=False)
    jpeg(beyond / "ILSVRC2012_val_00050001.JPEG", 3)
    with pytest.raises(ValueError, match="not one of the 50,000 validation files"):
        resolve_dataset("imagenet", beyond)
    with pytest.raises(ValueError, match="--dataset-dir is the folder of --dataset coco or imagenet"):
        resolve_dataset(str(beyond), beyond)


def test_bench_on_an_incomplete_imagenet_folder_records_a_subset(tmp_path):
    folder = imagenet_folder(tmp_path / "val", [1, 2, 3], synsets=True)
    report = tmp_path / "report"
    proc = bench("--dataset", "imagenet", "--dataset-dir", str(folder), "--report-dir", str(report))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"found 3 of 50,000 ILSVRC2012_val_*.JPEG in {folder}; missing e.g." in proc.stdout
    records = [json.loads(line) for line in (report / "records.jsonl").read_text().splitlines()]
    (protocol,) = [r for r in records if r["type"] == "protocol"]
    dataset = protocol["fields"]["dataset"]
    assert (dataset["name"], dataset["files"], dataset["subset"]) == (IMAGENET_NAME, 3,
                                                                      "the first 3 of 50,000 (by file name)")
    with open(report / "benchmark_results.csv", newline="") as f:
        assert [r["image_id"] for r in csv.DictReader(f)] == [f"ILSVRC2012_val_0000000{k}" for k in (1, 2, 3)]
    assert "subset: the first 3 of 50,000" in (report / "summary.md").read_text()
