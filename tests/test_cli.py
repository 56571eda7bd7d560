"""`vtok` through its installed entry point, on real photos from ../shared/images: the tiny golden models and the
real TAEF2 weights. Cheap error paths call `main()` in-process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import shared_path
from vision_tokenizers.cli import main
from vision_tokenizers.playground import TokenizerPlayground
from vision_tokenizers.registry import get_spec, list_tokenizers

VTOK = Path(sys.executable).parent / "vtok"


def vtok(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the console script the package installs (`pip install -e .` creates it next to the interpreter)."""
    assert VTOK.is_file(), f"{VTOK} missing: `pip install -e .` installs the vtok console script"
    full_env = {k: v for k, v in os.environ.items() if k != "VTOK_WEIGHTS"}  # only what the test passes
    full_env.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([str(VTOK), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two real photos (one in a sub-folder) and one file that is not an image."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "sub").mkdir()
    for src, dst in ((("photos", "16004479832_a748d55f21_k.jpg"), "flickr.jpg"),
                     (("coco_val2017", "000000000785.jpg"), "sub/000000000785.jpg")):
        (folder / dst).write_bytes(shared_path("images", *src).read_bytes())
    (folder / "notes.jpg").write_text("this is not a JPEG")
    return folder


@pytest.fixture(scope="module")
def tiny_run(photos, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("tiny_run")
    proc = vtok("run", "--model", "magvit2_tiny,titok_tiny", "--input", str(photos), "--output", str(out),
                "--weights-dir", str(shared_path("golden")), "--save-tokens", "--batch-size", "2", "--no-lpips",
                "--progress", "on")
    return proc, out


def test_help_reads_well():
    proc = vtok("--help")
    assert proc.returncode == 0
    for command in ("list", "run", "download", "report"):
        assert command in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "vision_tokenizers", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--save-tokens" in proc.stdout and "compare/<image>.png" in proc.stdout
    with pytest.raises(SystemExit) as exc:
        main(["download", "--help"])
    assert exc.value.code == 0


def test_list_shows_every_tokenizer_with_its_weights():
    proc = vtok("list", "--all", env={"VTOK_WEIGHTS": str(shared_path("weights"))})
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for name in list_tokenizers(include_tiny=True):
        spec = get_spec(name)
        assert name in lines, name
        assert f"{spec.bits_per_pixel:.4g}" in lines[name] and str(spec.resolution) in lines[name]
    assert "present in" in lines["taef2_512"] and "taesd" in lines["taef2_512"]
    assert "missing (from hf://TencentARC/Open-MAGVIT2-Tokenizer-256-resolution)" in lines["magvit2_256"]
    assert "262144" in lines["magvit2_256"] and "16x16" in lines["magvit2_256"]


def test_run_writes_reconstructions_comparisons_metrics_and_tokens(tiny_run, photos):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    ids = ["flickr", "000000000785"]  # the benchmark's ids: the file's stem, wherever it lies in the folder
    bad = [line for line in proc.stderr.splitlines() if "notes.jpg" in line]
    assert len(bad) == 1 and "cannot be decoded" in bad[0]  # reported once, in one line, then skipped
    assert "img/s" in proc.stderr  # the progress bar
    with open(out / "benchmark_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["tokenizer"], r["image_id"]) for r in rows) == \
        sorted((t, i) for t in ("magvit2_tiny", "titok_tiny") for i in ids)
    assert all(float(r["psnr"]) > 5 and 0 < float(r["ssim"]) < 1 for r in rows)
    for name in ("magvit2_tiny", "titok_tiny"):
        spec = get_spec(name)
        for image_id in ids:
            tokens = np.load(out / "tokens" / name / f"{image_id}.npy")
            assert tokens.shape == spec.token_shape and tokens.dtype.kind == "i"
            assert tokens.min() >= 0 and tokens.max() < spec.codebook_size
            with Image.open(out / "recon" / name / f"{image_id}.png") as im:
                assert im.size == (spec.resolution, spec.resolution)
    with Image.open(out / "compare" / "flickr.png") as sheet:
        assert sheet.width >= 3 * 256  # original | magvit2_tiny | titok_tiny
    assert (out / "summary.md").is_file() and "magvit2_tiny" in (out / "summary.md").read_text()
    # the CLI and the API agree: same reconstruction, same tokens
    playground = TokenizerPlayground(weights_dir=shared_path("golden"), offline=True)
    playground.load("titok_tiny")
    recon = playground.reconstruct(photos / "flickr.jpg")
    with Image.open(out / "recon" / "titok_tiny" / "flickr.png") as saved:
        assert np.abs(np.asarray(saved).astype(int) - np.asarray(recon).astype(int)).max() <= 1
    assert np.array_equal(np.load(out / "tokens" / "titok_tiny" / "flickr.npy"),
                          playground.encode(photos / "flickr.jpg").numpy())


def test_report_rebuilds_from_stored_results(tiny_run, tmp_path, capsys):
    _, out = tiny_run
    for name in ("benchmark_results.csv", "summary.md"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "benchmark_results.csv").is_file() and "summary.md" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["tokenizers"]["titok_tiny"]["n_images"] == 2
    assert main(["report", str(tmp_path)]) == 2


@pytest.mark.slow
def test_run_taef2_on_a_real_photo(tmp_path):
    photo = shared_path("images", "coco_val2017", "000000087038.jpg")
    out = tmp_path / "out"
    proc = vtok("run", "-m", "taef2_512", "-i", str(photo), "-o", str(out), "--save-tokens", "safetensors",
                "--no-lpips", env={"VTOK_WEIGHTS": str(shared_path("weights"))})
    assert proc.returncode == 0, proc.stderr
    with open(out / "benchmark_results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["tokenizer"] == "taef2_512" and float(row["psnr"]) > 25  # TAEF2 on a COCO photo: ~29 dB
    assert "taef2_512: 1 image(s), PSNR" in proc.stdout
    from safetensors import safe_open

    with safe_open(str(out / "tokens" / "taef2_512" / "000000087038.safetensors"), "pt") as f:
        assert f.get_tensor("tokens").shape == (32, 64, 64) and f.metadata()["tokenizer"] == "taef2_512"
    with Image.open(out / "compare" / "000000087038.png") as sheet:
        assert sheet.width == 2 * 512 + 3 * 6


def test_nothing_done_is_the_only_failure(photos, tmp_path, capsys):
    # no weights for the only tokenizer: one line, exit 1
    assert main(["run", "-m", "magvit2_256", "-i", str(photos), "-o", str(tmp_path / "a"), "--offline",
                 "--weights-dir", str(tmp_path), "--no-lpips"]) == 1
    err = capsys.readouterr().err
    assert "magvit2_256: skipped: weights for magvit2_256 unavailable (offline" in err
    assert "nothing done: no tokenizer could be loaded" in err
    # one tokenizer without weights among working ones: still a success
    assert main(["run", "-m", "titok_l32_256,titok_tiny", "-i", str(photos / "flickr.jpg"), "-o",
                 str(tmp_path / "b"), "--offline", "--weights-dir", str(shared_path("golden")), "--no-lpips"]) == 0
    assert "titok_l32_256: skipped" in capsys.readouterr().err
    # only unreadable inputs
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.png").write_text("no")
    assert main(["run", "-m", "titok_tiny", "-i", str(tmp_path / "junk"), "-o", str(tmp_path / "c"),
                 "--weights-dir", str(shared_path("golden")), "--no-lpips"]) == 1
    assert "nothing done: no input image could be read" in capsys.readouterr().err
    # usage errors
    with pytest.raises(SystemExit) as exc:
        main(["run", "-m", "nope", "-i", str(photos), "-o", str(tmp_path / "d")])
    assert exc.value.code == 2 and "unknown tokenizer nope" in capsys.readouterr().err
    assert main(["run", "-m", "titok_tiny", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "e")]) == 2


def test_download_weights_one_line_per_tokenizer(tmp_path, capsys):
    proc = vtok("download", "weights", "all", "--offline", "--weights-dir", str(tmp_path))
    assert proc.returncode == 1  # nothing could be had
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    real = list_tokenizers()
    assert [line.split(":")[0] for line in lines[:-1]] == real
    assert all("unavailable (offline" in line for line in lines[:-1])
    assert lines[-1] == f"0 of {len(real)} tokenizer(s) have their weights"
    assert main(["download", "weights", "taef2_512", "magvit2_256", "--offline", "--weights-dir",
                 str(shared_path("weights"))]) == 0  # something was done
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("taef2_512: ok, ") and "1 of 2 tokenizer(s)" in out
    assert main(["download", "weights", "nope"]) == 2


def test_run_seeds_sampling_detokenizers(photos, tmp_path):
    """A sampling de-tokenizer draws from a generator seeded from (--seed, image id); the seed is recorded."""
    from vision_tokenizers.base import image_seed

    shared_path("golden", "tatok_ardtok")
    recons = {}
    for seed in (5, 6):
        out = tmp_path / str(seed)
        assert main(["run", "-m", "tatok_ardtok_tiny", "-i", str(photos / "flickr.jpg"), "-o", str(out), "--seed",
                     str(seed), "--weights-dir", str(shared_path("golden")), "--no-lpips", "--progress", "off"]) == 0
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        (image,) = [r for r in records if r["type"] == "image"]
        assert image["seed"] == image_seed(seed, "flickr")
        recons[seed] = np.asarray(Image.open(out / "recon" / "tatok_ardtok_tiny" / "flickr.png"))
    assert not np.array_equal(recons[5], recons[6])


def test_a_failing_model_is_reported_per_image_and_the_run_goes_on(photos, tmp_path, capsys, monkeypatch):
    import vision_tokenizers.titok as titok_family

    def broken(self, tokens):
        raise RuntimeError("planted failure inside the model")

    monkeypatch.setattr(titok_family.TiTok, "_decode", broken)
    out = tmp_path / "out"
    assert main(["run", "--model", "titok_tiny,magvit2_tiny", "--input", str(photos), "--output", str(out),
                 "--offline", "--weights-dir", str(shared_path("golden")), "--no-lpips", "--progress", "off"]) == 0
    err = capsys.readouterr().err
    assert "titok_tiny: failed on" in err and "planted failure inside the model" in err
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    failed = {r["image_id"] for r in records if r.get("what") == "image:failed" and r["tokenizer"] == "titok_tiny"}
    assert failed == {"flickr", "000000000785"}  # the benchmark's ids (a file in a sub-folder: its stem too)
    assert {r["image_id"] for r in records if r["type"] == "image" and r["tokenizer"] == "magvit2_tiny"} == failed
