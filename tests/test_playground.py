"""`TokenizerPlayground`: the README's example run verbatim, every accepted input form, and agreement with the
benchmark's own evaluation path. Tiny golden checkpoints for speed; TAEF2's real weights for the example."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import REPO, shared_path
from vision_tokenizers.datasets import ImageSet
from vision_tokenizers.evaluate import evaluate
from vision_tokenizers.images import load_image
from vision_tokenizers.playground import TokenizerPlayground, as_images, difference, side_by_side, zoom_crop
from vision_tokenizers.registry import get_spec
from vision_tokenizers.weights import WeightsUnavailable

EXAMPLE = REPO / "docs" / "playground_example.py"
PHOTO = ("images", "coco_val2017", "000000087038.jpg")


@pytest.fixture(scope="module")
def playground() -> TokenizerPlayground:
    shared_path("golden", "magvit2", "magvit2_tiny.ckpt")
    pg = TokenizerPlayground(device="cpu", weights_dir=shared_path("golden"), offline=True)
    pg.load("titok_tiny")
    pg.load("magvit2_tiny")
    return pg


@pytest.mark.slow
def test_readme_example_runs_verbatim(tmp_path):
    """docs/playground_example.py is the README's API example; it runs as written on the real TAEF2 weights."""
    weights = shared_path("weights", "taesd")
    env = {**os.environ, "VTOK_WEIGHTS": str(weights.parent), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Tokens: 131072, Codebook: None, bits/pixel: 16.0" in proc.stdout
    psnr = float(re.search(r"PSNR ([\d.]+) dB", proc.stdout).group(1))
    assert 29 < psnr < 34, proc.stdout  # TAEF2 on astronaut: ~31 dB (../shared/weights/README.md)
    with Image.open(tmp_path / "astronaut_taef2.png") as saved:
        assert saved.size == (512, 512)


def test_readme_shows_the_example_verbatim():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"```python\n{EXAMPLE.read_text(encoding='utf-8')}```" in readme, \
        "README.md's Python API example must be docs/playground_example.py, verbatim (the file the test runs)"


def test_every_input_form_gives_the_same_tokens(playground):
    path = shared_path(*PHOTO)
    image = load_image(path)
    arr = np.array(image)
    forms = {
        "path": path, "str": str(path), "pil": image, "numpy_u8": arr, "numpy_f32": arr.astype(np.float32) / 255,
        "numpy_chw": arr.transpose(2, 0, 1), "tensor_u8": torch.from_numpy(arr).permute(2, 0, 1),
        "tensor_f32": torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
    }
    reference = playground.encode(path)
    assert tuple(reference.shape) == get_spec("magvit2_tiny").token_shape and not reference.is_floating_point()
    for name, form in forms.items():
        assert torch.equal(playground.encode(form), reference), name
    batch = playground.encode([path, torch.from_numpy(arr).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)])
    assert batch.shape == (3, *reference.shape) and all(torch.equal(t, reference) for t in batch)
    rgba = Image.fromarray(np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)]))
    assert torch.equal(playground.encode(rgba), reference)  # opaque alpha changes nothing


def test_decode_reconstruct_and_measure_agree_with_the_benchmark_path(playground):
    path = shared_path(*PHOTO)
    tokens = playground.encode(path, "titok_tiny")
    assert playground.current == "magvit2_tiny"  # naming a tokenizer does not switch the current one
    single = playground.decode(tokens, "titok_tiny")
    assert isinstance(single, Image.Image) and single.size == (64, 64)
    pair = playground.decode(torch.stack([tokens, tokens]), "titok_tiny")
    assert isinstance(pair, list) and len(pair) == 2
    # batched kernels may round a pixel or two the other way; never more than one 8-bit step
    assert np.abs(np.asarray(pair[0]).astype(int) - np.asarray(single).astype(int)).max() <= 1
    recon = playground.reconstruct(path, "titok_tiny")
    result = playground.measure(path, "titok_tiny", lpips=False)
    assert np.array_equal(np.asarray(recon), result.reconstruction)
    assert torch.equal(result.tokens, tokens.cpu())
    assert result.encode_s > 0 and result.decode_s > 0 and result.skipped == {"lpips": "not requested"}
    # the benchmark's path (ImageSet crop + evaluate) gives the same numbers for the same file
    images = ImageSet("one", [path])
    bench = evaluate(playground.tokenizer("titok_tiny"), images.batches(64, 1))
    assert bench.per_image[path.stem] == pytest.approx(result.metrics)
    assert result.metrics["bpp"] == pytest.approx(get_spec("titok_tiny").bits_per_pixel)


def test_info(playground):
    info = playground.info()
    spec = get_spec("magvit2_tiny")
    assert (info["name"], info["num_tokens"], info["codebook_size"], info["resolution"], info["bits_per_pixel"]) == \
        ("magvit2_tiny", spec.num_tokens, 64, 64, spec.bits_per_pixel)
    assert playground.info("taef2_512")["codebook_size"] is None  # any registered tokenizer, without loading it
    with pytest.raises(RuntimeError, match="load"):
        TokenizerPlayground().info()


def test_bad_inputs_and_names_are_clear_errors(playground, tmp_path):
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        playground.encode(np.full((8, 8, 3), 200.0))
    with pytest.raises(TypeError, match="PIL image, a path"):
        playground.encode(12)
    with pytest.raises(ValueError, match="shape"):
        as_images(np.zeros((8, 8, 5), np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: cannot be decoded"):
        playground.encode(broken)
    with pytest.raises(KeyError, match="unknown tokenizer"):
        playground.load("nope")
    with pytest.raises(WeightsUnavailable, match="magvit2_256"):
        TokenizerPlayground(weights_dir=tmp_path, offline=True).load("magvit2_256")


def test_pictures_for_people():
    a = np.zeros((64, 64, 3), np.uint8)
    b = a.copy()
    b[10:20, 10:20] = 5
    diff = np.asarray(difference(a, b, gain=4))
    assert diff.max() == 20 and diff[:10].max() == 0
    zoom = zoom_crop(b, (0.2, 0.2), 0.25, 128)
    assert zoom.size == (128, 128) and np.asarray(zoom).max() == 5
    sheet = side_by_side([(Image.fromarray(a), ["original"]), (Image.fromarray(b), ["x", "PSNR 1 dB"])])
    assert sheet.width > 2 * 256 and sheet.height > 256  # cells of at least 256 px, captions below


def test_sampling_detokenizer_is_reproducible_from_its_seed():
    """A sampling de-tokenizer (TA-Tok + AR-DTok, tiny golden) draws only from the generator it is given."""
    shared_path("golden", "tatok_ardtok")
    playground = TokenizerPlayground(weights_dir=shared_path("golden"), offline=True)
    playground.load("tatok_ardtok_tiny")
    assert get_spec("tatok_ardtok_tiny").stochastic
    photo = shared_path(*PHOTO)
    first, again, other = (playground.measure(photo, lpips=False, seed=s) for s in (1, 1, 2))
    assert np.array_equal(first.reconstruction, again.reconstruction)
    assert not np.array_equal(first.reconstruction, other.reconstruction)
    tokens = playground.encode(photo)
    a, b = (playground.decode(tokens, generator=torch.Generator().manual_seed(7)) for _ in range(2))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_measure_seeds_a_sampling_detokenizer_from_the_file_like_the_benchmark():
    """`measure(path, seed=s)` is the benchmark's number for that file: the image's generator is seeded from (run
    seed, file stem) as in bench/conftest.py's evaluation, not from a fixed id."""
    shared_path("golden", "tatok_ardtok")
    playground = TokenizerPlayground(weights_dir=shared_path("golden"), offline=True)
    tokenizer = playground.load("tatok_ardtok_tiny")
    photo = shared_path(*PHOTO)
    images = ImageSet("one", [photo])
    batches = []
    evaluate(tokenizer, images.batches(tokenizer.resolution, 1), run_seed=3, on_batch=batches.append, reduce=False)
    assert batches[0].ids == [photo.stem]
    from_file = playground.measure(photo, lpips=False, seed=3)
    assert np.array_equal(from_file.reconstruction, batches[0].reconstruction[0].permute(1, 2, 0).cpu().numpy())
    assert from_file.metrics == pytest.approx(batches[0].metrics[0])
    pixels = np.asarray(load_image(photo))  # no file name: seeded as "image" unless the benchmark's id is given
    unnamed = playground.measure(pixels, lpips=False, seed=3)
    named = playground.measure(pixels, lpips=False, seed=3, image_id=photo.stem)
    assert not np.array_equal(unnamed.reconstruction, from_file.reconstruction)
    assert np.array_equal(named.reconstruction, from_file.reconstruction)
