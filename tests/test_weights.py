import time

import pytest
import torch

import vision_tokenizers as vt
from tests.helpers import shared_path
from vision_tokenizers.spec import TokenizerSpec, WeightFile
from vision_tokenizers.weights import resolve_weights, sha256_of


def test_registry_names_follow_published_table():
    names = vt.list_tokenizers()
    for name in ("vae_sd_mse_q8_512", "magvit2_256", "titok_l32_256", "taef2_512", "vae_sd_mse_512"):
        assert name in names
    assert "magvit2_tiny" not in names and "magvit2_tiny" in vt.list_tokenizers(include_tiny=True)
    with pytest.raises(KeyError, match="unknown tokenizer"):
        vt.get_spec("tokenizers")


def test_bits_per_pixel_of_specs():
    assert vt.get_spec("magvit2_256").bits_per_pixel == pytest.approx(256 * 18 / 256**2)
    assert vt.get_spec("titok_l32_256").bits_per_pixel == pytest.approx(32 * 12 / 256**2)
    assert vt.get_spec("vae_sd_mse_q8_512").bits_per_pixel == pytest.approx(4 * 64 * 64 * 8 / 512**2)


def test_local_weights_are_found_and_verified(tmp_path):
    (tmp_path / "fam").mkdir()
    blob = tmp_path / "fam" / "w.bin"
    blob.write_bytes(b"weights")
    good = TokenizerSpec("x", "taesd", 64, "continuous", (1,), 8,
                         weights=(WeightFile("w.bin", "fam", sha256=sha256_of(blob)),))
    assert resolve_weights(good, tmp_path, offline=True) == {"w.bin": blob}
    bad = TokenizerSpec("x", "taesd", 64, "continuous", (1,), 8, weights=(WeightFile("w.bin", "fam", sha256="0" * 64),))
    with pytest.raises(vt.WeightsUnavailable, match="does not match"):
        resolve_weights(bad, tmp_path, offline=True)


def test_missing_weights_give_one_line_reason_fast(tmp_path):
    start = time.monotonic()
    for name in ("magvit2_256", "titok_l32_256", "vae_sd_mse_q8_512", "taef2_512"):
        with pytest.raises(vt.WeightsUnavailable) as info:
            vt.load(name, weights_dir=tmp_path)  # not offline: the unreachable hub must fail fast too
        message = str(info.value)
        assert "\n" not in message and name in message and str(tmp_path) in message
    assert time.monotonic() - start < 60


def test_taef2_loads_real_weights_strictly_and_reconstructs():
    from skimage import data

    from vision_tokenizers.base import to_uint8

    tok = vt.load("taef2_512", weights_dir=shared_path("weights"), offline=True)
    pixels = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    latents = tok.encode(pixels)
    assert latents.shape == (1, 32, 64, 64)
    recon = to_uint8(tok.decode(latents)).float()
    mse = (recon - to_uint8(pixels).float()).pow(2).mean()
    psnr = 10 * torch.log10(255**2 / mse)
    assert 30.0 < psnr < 33.0  # the weights README measures ~31 dB; a wrong port lands far below


def test_taef2_strict_load_rejects_wrong_architecture():
    from tok.taesd import TinyEncoder

    state = torch.load(shared_path("weights", "taesd", "taef2_encoder.pth"), weights_only=True)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        TinyEncoder(32, norm_branch=False).load_state_dict(state, strict=True)


def test_truncated_checkpoint_is_a_one_line_unusable_weights_error(tmp_path):
    golden = shared_path("golden", "magvit2")
    (tmp_path / "magvit2").mkdir()
    (tmp_path / "magvit2" / "config.json").write_bytes((golden / "config.json").read_bytes())
    (tmp_path / "magvit2" / "magvit2_tiny.ckpt").write_bytes((golden / "magvit2_tiny.ckpt").read_bytes()[:50_000])
    with pytest.raises(vt.WeightsUnavailable) as info:
        vt.load("magvit2_tiny", weights_dir=tmp_path, offline=True)
    message = str(info.value)
    assert "\n" not in message and "unreadable" in message and "magvit2_tiny.ckpt" in message


@pytest.mark.parametrize("config", ["magvit2/config.json", "titok/checkpoint/config.json"])
def test_truncated_config_json_is_an_unusable_weights_skip(tmp_path, config):
    golden = shared_path("golden")
    name = "magvit2_tiny" if config.startswith("magvit2") else "titok_tiny"
    for wf in vt.get_spec(name).weights:
        target = tmp_path / wf.local_dir / wf.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((golden / wf.local_dir / wf.filename).read_bytes())
    (tmp_path / config).write_text('{"model": {"vq_model": ')
    with pytest.raises(vt.WeightsUnavailable) as info:
        vt.load(name, weights_dir=tmp_path, offline=True)
    assert "\n" not in str(info.value) and "config.json" in str(info.value)


def _hash_then_wait(path: str, cache: str, barrier) -> None:
    """A process hashing `path` into the shared cache; every process reaches the barrier after it has looked the
    key up and hashed, before it writes: the interleaving that lost entries in a read-modify-write, every time."""
    import os
    import sys

    from vision_tokenizers import weights

    os.environ["VTOK_CACHE"] = cache
    real = weights.sha256_of

    def hashed(p, *args, **kwargs):
        digest = real(p, *args, **kwargs)
        barrier.wait(timeout=120)
        return digest
    weights.sha256_of = hashed
    sys.exit(0 if weights.cached_sha256(path) == real(path) else 1)


def test_cached_sha256_keeps_every_entry_of_concurrent_processes(tmp_path):
    import json
    import multiprocessing

    files = []
    for k in range(4):
        files.append(tmp_path / f"w{k}.bin")
        files[-1].write_bytes(bytes([k]) * (1000 + k))
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")  # children only hash: no torch threads involved
    barrier = ctx.Barrier(len(files))
    procs = [ctx.Process(target=_hash_then_wait, args=(str(f), str(cache), barrier)) for f in files]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0] * len(files)
    stored = json.loads((cache / "sha256.json").read_text())
    assert len(stored) == len(files)
    for f in files:
        key = next(k for k in stored if k.startswith(f"{f.resolve()}|"))
        assert stored[key] == sha256_of(f)
