"""`diffusers:<folder>` through the whole benchmark, as a user types it: tiny random AutoencoderKL, AutoencoderDC,
AutoencoderTiny and VQModel saved with `save_pretrained`, one `pytest bench` run, and every per-image PSNR equal to
what diffusers itself gives on the same saved crops; a folder that holds no image autoencoder is one usage line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import shared_path
from tests.test_diffusers_autoencoder import reference_reconstruction, tiny_model
from tests.test_plugins import bench
from vision_tokenizers.base import to_uint8
from vision_tokenizers.metrics import psnr

CLASSES = {"kl": ("AutoencoderKL", 4, 2, {}), "dc": ("AutoencoderDC", 8, 4, {}),
           "tiny": ("AutoencoderTiny", 4, 2, {}), "vq": ("VQModel", 4, 2, {"num_vq_embeddings": 32})}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dae_bench")
    photos = root / "photos"
    photos.mkdir()
    for name in ("000000000785.jpg", "000000014439.jpg"):
        (photos / name).write_bytes(shared_path("images", "coco_val2017", name).read_bytes())
    models, names = {}, {}
    for key, (class_name, channels, factor, extra) in CLASSES.items():
        models[key] = tiny_model(class_name, channels, factor, **extra)
        models[key].save_pretrained(root / "models" / key)
        names[key] = f"diffusers:{root / 'models' / key}"
    report = root / "report"
    proc = bench("--tokenizers", ",".join(names.values()), "--resolution", "64", "--dataset", str(photos),
                 "--report-dir", str(report), "--offline")
    return proc, report, models, names


def test_each_class_runs_under_the_typed_name_with_the_numbers_diffusers_gives(run):
    proc, report, models, names = run
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = list(csv.DictReader((report / "benchmark_results.csv").open()))
    assert {r["tokenizer"] for r in rows} == set(names.values()), "the report names each tokenizer as typed"
    for key, name in names.items():
        mine = [r for r in rows if r["tokenizer"] == name]
        assert len(mine) == 2 and {r["resolution"] for r in mine} == {"64"}
        for row in mine:
            original, = report.glob(f"originals/**/{row['image_id']}.png")
            crop = torch.from_numpy(np.array(Image.open(original).convert("RGB"))).permute(2, 0, 1)[None]
            theirs = to_uint8(reference_reconstruction(models[key], crop.float() / 255))
            assert float(row["psnr"]) == pytest.approx(float(psnr(crop, theirs)[0]), abs=2e-3), (key, row)
    facts = {r["tokenizer"]: r["facts"] for r in map(json.loads, (report / "records.jsonl").open())
             if r["type"] == "tokenizer"}
    assert facts[names["vq"]]["kind"] == "discrete" and facts[names["vq"]]["codebook_size"] == 32
    assert facts[names["kl"]]["token_shape"] == [4, 32, 32] and facts[names["dc"]]["token_shape"] == [8, 16, 16]


def test_a_folder_without_an_image_autoencoder_is_one_usage_line(tmp_path):
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    unet.save_pretrained(tmp_path / "u")
    proc = bench("--tokenizers", f"diffusers:{tmp_path / 'u'}", "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 4, proc.stdout[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "UNet2DModel" in ln]
    assert len(lines) == 1 and "AutoencoderKL" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "r").exists()
