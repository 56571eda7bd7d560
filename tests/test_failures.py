"""Failing models and failing weight files: one failure costs what it touches, is reported with its reason, and
nothing else is lost (issue 12).

Model failures are injected into the tiny golden MAGVIT2 (`_encode` / `_decode` patched): an exception on the batch
holding an odd image, CUDA out-of-memory (raised on the CPU), NaN / Inf output. Weight files: a checksum mismatch and
a truncated checkpoint are reported with the file and the fix before anything is built; a plain-URL download that
drops half-way resumes with an HTTP Range request against a local server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import vision_tokenizers as vt
from tests.helpers import REPO, shared_path
from vision_tokenizers.evaluate import Failure, evaluate
from vision_tokenizers.magvit2 import Magvit2
from vision_tokenizers.registry import REGISTRY
from vision_tokenizers.spec import TokenizerSpec, WeightFile
from vision_tokenizers.weights import download_url, resolve_weights

IDS = ["a", "b", "odd", "c", "d", "e"]  # batches of 2: [a, b] [odd, c] [d, e]


@pytest.fixture(scope="module")
def magvit2() -> Magvit2:
    return vt.load("magvit2_tiny", weights_dir=shared_path("golden"), offline=True)


def pixels() -> torch.Tensor:
    """uint8 (6,3,64,64): textured images, except `odd`, a single flat colour (what the injected bugs react to)."""
    images = torch.randint(0, 256, (len(IDS), 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[IDS.index("odd")] = 90
    return images


def batches(size: int = 2):
    images = pixels()
    return [(IDS[i:i + size], images[i:i + size]) for i in range(0, len(IDS), size)]


def is_flat(model_pixels: torch.Tensor) -> torch.Tensor:
    return model_pixels.flatten(1).std(1) == 0


def run(tokenizer, size: int = 2):
    """(evaluation, failures reported, ids stored by `on_batch`) of one pass in batches of `size`."""
    failures: list[Failure] = []
    stored: list[str] = []
    result = evaluate(tokenizer, batches(size), on_failure=failures.append, on_batch=lambda b: stored.extend(b.ids))
    return result, failures, stored


@pytest.fixture(scope="module")
def clean(magvit2):
    result, failures, _ = run(magvit2)
    assert not failures
    return result


def bench(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`pytest bench ...` in a subprocess as a user runs it (see tests/test_bench_e2e.py), with extra environment
    variables and a command prefix."""
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**clean_env, **(env or {})})


def test_exception_on_one_batch_fails_that_batch_and_the_run_goes_on(magvit2, clean, monkeypatch):
    original = Magvit2._encode

    def shape_bug(self, model_pixels):
        if is_flat(model_pixels).any():
            raise RuntimeError("shape '[2, 18, 4, 4]' is invalid for input of size 17")
        return original(self, model_pixels)

    monkeypatch.setattr(Magvit2, "_encode", shape_bug)
    with pytest.warns(UserWarning, match="magvit2_tiny: batch odd, c failed: RuntimeError: shape"):
        result, failures, stored = run(magvit2)
    assert failures == [Failure("batch", ["odd", "c"], "RuntimeError: shape '[2, 18, 4, 4]' is invalid for input "
                                                       "of size 17")]
    assert set(result.failed) == {"odd", "c"} and "is invalid for input" in result.failed["c"]
    assert stored == ["a", "b", "d", "e"] and list(result.per_image) == stored  # later batches still ran
    for image_id in stored:  # the other batches' numbers are the ones of an undisturbed run
        assert result.per_image[image_id] == clean.per_image[image_id]
    assert result.dataset_metrics["codebook_usage"] > 0  # token statistics over the images that worked


def test_out_of_memory_retries_at_half_the_batch_size_down_to_one(magvit2, clean, monkeypatch):
    original, sizes = Magvit2._encode, []

    def small_memory(self, model_pixels):
        sizes.append(len(model_pixels))
        if len(model_pixels) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, model_pixels)

    monkeypatch.setattr(Magvit2, "_encode", small_memory)
    with pytest.warns(UserWarning, match="CUDA out of memory on a batch of 4; retrying as batches of 2"):
        result = evaluate(magvit2, batches(4))
    assert sizes == [4, 2, 1, 1, 2, 1, 1, 2, 1, 1]  # [a b odd c] -> [a b] -> a, b; [odd c] -> odd, c; [d e] -> d, e
    assert not result.failed and sorted(result.per_image) == sorted(IDS)
    for image_id in IDS:
        assert result.per_image[image_id] == pytest.approx(clean.per_image[image_id], rel=1e-4, abs=1e-4)  # batch noise


def test_out_of_memory_at_batch_size_one_fails_that_image_only(magvit2, monkeypatch):
    original = Magvit2._encode

    def huge_odd_image(self, model_pixels):
        if is_flat(model_pixels).any():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return original(self, model_pixels)

    monkeypatch.setattr(Magvit2, "_encode", huge_odd_image)
    result, failures, stored = run(magvit2)
    assert [(f.kind, f.ids) for f in failures] == [("batch", ["odd"])]
    assert "out of memory even at batch size 1" in failures[0].reason and "Tried to allocate 80.00 GiB" in \
        failures[0].reason
    assert stored == ["a", "b", "c", "d", "e"]


def test_nan_output_fails_those_images_and_is_never_averaged(magvit2, clean, monkeypatch):
    encode, decode, flat = Magvit2._encode, Magvit2._decode, []

    def remember(self, model_pixels):
        flat.append(is_flat(model_pixels))
        return encode(self, model_pixels)

    def nan_for_flat(self, tokens):
        out = decode(self, tokens).clone()
        out[flat.pop(0)] = float("nan")
        return out

    monkeypatch.setattr(Magvit2, "_encode", remember)
    monkeypatch.setattr(Magvit2, "_decode", nan_for_flat)
    result, failures, stored = run(magvit2)
    assert [(f.kind, f.ids) for f in failures] == [("image", ["odd"])] and "NaN" in failures[0].reason
    assert "odd" not in result.per_image and stored == ["a", "b", "c", "d", "e"]  # c shared odd's batch and is kept
    assert result.per_image["c"] == clean.per_image["c"]
    expected = sum(clean.per_image[i]["psnr"] for i in stored) / len(stored)
    assert result.mean("psnr") == pytest.approx(expected)


def test_inf_output_fails_the_image(magvit2, monkeypatch):
    """At the interface: `decode` returning +Inf is caught, not rounded to a white image and measured."""
    decode = Magvit2.decode

    def inf_first(self, tokens, generator=None):
        out = decode(self, tokens, generator).clone()
        out[0, 0, 0, 0] = float("inf")
        return out

    monkeypatch.setattr(Magvit2, "decode", inf_first)
    result, failures, _ = run(magvit2)
    assert [f.ids for f in failures] == [["a"], ["odd"], ["d"]]
    assert sorted(result.per_image) == ["b", "c", "e"]


def test_inf_inside_the_model_is_not_clamped_into_a_white_image(magvit2, monkeypatch):
    """The network itself returns +Inf: `BaseTokenizer.decode` keeps it non-finite, so the image fails."""
    inner = Magvit2._decode

    def inf_model(self, tokens):
        out = inner(self, tokens).clone()
        out[0, 0, 0, 0] = float("inf")
        return out

    monkeypatch.setattr(Magvit2, "_decode", inf_model)
    result, failures, _ = run(magvit2)
    assert [f.ids for f in failures] == [["a"], ["odd"], ["d"]]
    assert sorted(result.per_image) == ["b", "c", "e"]


def test_a_bug_in_every_batch_leaves_nothing_measured_and_everything_failed(magvit2, monkeypatch):
    def broken(self, tokens):
        raise TypeError("decode_code() got an unexpected keyword argument 'shape'")

    monkeypatch.setattr(Magvit2, "_decode", broken)
    result, failures, stored = run(magvit2)
    assert stored == [] and result.per_image == {} and sorted(result.failed) == sorted(IDS)
    assert [f.ids for f in failures] == [IDS[0:2], IDS[2:4], IDS[4:6]]
    assert "codebook_usage" not in result.dataset_metrics  # no statistics made of nothing


# ------------------------------------------------------------------------------------------- end to end: pytest bench
PLUGIN = '''
"""Injected bugs: magvit2_tiny's decoder always raises; titok_tiny paints NaN for the flat image."""
from vision_tokenizers.magvit2 import Magvit2
from vision_tokenizers.titok import TiTok


def broken(self, tokens):
    raise RuntimeError("injected decoder bug")


Magvit2._decode = broken
encode, decode = TiTok._encode, TiTok._decode


def remember(self, pixels):
    self.flat = pixels.flatten(1).std(1) == 0
    return encode(self, pixels)


def nan_for_flat(self, tokens):
    out = decode(self, tokens).clone()
    out[self.flat] = float("nan")
    return out


TiTok._encode, TiTok._decode = remember, nan_for_flat
'''


def test_bench_run_fails_naming_failed_images_and_still_reports_the_rest(tmp_path):
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    for i, image in enumerate(pixels()[:3].permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(data / f"img{i}.png")  # img2 is the flat one
    (tmp_path / "injected_bugs.py").write_text(PLUGIN)
    report = tmp_path / "report"
    proc = bench("--tokenizers", "magvit2_tiny,titok_tiny", "--weights-dir", str(shared_path("golden")),
                     "--offline", "--dataset", str(data), "--report-dir", str(report), "--benchmark-disable",
                     "-p", "injected_bugs", "--batch-size", "2", env={"PYTHONPATH": str(tmp_path)})
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "magvit2_tiny: every image failed: img0: RuntimeError: injected decoder bug" in out
    assert "titok_tiny: 1 image(s) failed: img2: non-finite reconstruction" in out
    summary = json.loads((report / "report.json").read_text())
    titok, magvit = summary["tokenizers"]["titok_tiny"], summary["tokenizers"]["magvit2_tiny"]
    assert titok["n_images"] == 2 and titok["status"] == "ok"  # the other tokenizer's results are recorded
    assert titok["dataset_metrics"]["codebook_usage"] > 0
    assert [f["image_id"] for f in titok["failed_images"]] == ["img2"] and titok["failed_batches"] == []
    assert magvit["status"] == "failed" and magvit["n_images"] == 0
    assert [b["image_ids"] for b in magvit["failed_batches"]] == [["img0", "img1"], ["img2"]]
    assert sorted(f["image_id"] for f in magvit["failed_images"]) == ["img0", "img1", "img2"]
    md = (report / "summary.md").read_text()
    assert "| `magvit2_tiny` | 0 | 3 | 2 |" in md and "| `titok_tiny` | 0 | 1 | 0 |" in md
    assert "- batch of 2 (`img0`, `img1`): RuntimeError: injected decoder bug" in md


def test_report_lists_every_bad_input_and_failure_and_forgets_what_a_rerun_fixed():
    from vision_tokenizers.results import aggregate

    def image(tok, image_id):
        return {"type": "image", "tokenizer": tok, "image_id": image_id, "metrics": {"psnr": 20.0}}

    records = [
        {"type": "skip", "tokenizer": "t", "what": "image", "image_id": f"bad{i}", "reason": f"r{i}"} for i in range(4)
    ] + [
        {"type": "skip", "tokenizer": None, "what": "image", "image_id": "cli_bad", "reason": "vtok run: unreadable"},
        image("t", "a"),
        {"type": "skip", "tokenizer": "t", "what": "batch", "image_ids": ["b", "c"], "reason": "RuntimeError: x"},
        {"type": "skip", "tokenizer": "t", "what": "batch", "image_ids": ["d"], "reason": "OutOfMemoryError: y"},
        {"type": "skip", "tokenizer": "t", "what": "image:failed", "image_id": "e", "reason": "non-finite"},
        {"type": "skip", "tokenizer": "u", "what": "image:failed", "image_id": "a", "reason": "non-finite"},
        image("t", "c"),  # a rerun reconstructed c (and only c) of the first failed batch
    ]
    report = aggregate(records)
    t, u = report["tokenizers"]["t"], report["tokenizers"]["u"]
    assert [b["image_id"] for b in t["bad_inputs"]] == ["bad0", "bad1", "bad2", "bad3", "cli_bad"]  # none overwritten
    assert {f["image_id"]: f["reason"] for f in t["failed_images"]} == {
        "b": "RuntimeError: x", "d": "OutOfMemoryError: y", "e": "non-finite"}
    assert t["failed_batches"] == [{"image_ids": ["b"], "reason": "RuntimeError: x"},
                                   {"image_ids": ["d"], "reason": "OutOfMemoryError: y"}]
    assert t["status"] == "ok" and t["n_images"] == 2
    assert u["status"] == "failed" and [f["image_id"] for f in u["failed_images"]] == ["a"]
    assert [b["image_id"] for b in u["bad_inputs"]] == ["cli_bad"]  # a skip without tokenizer applies to all


# --------------------------------------------------------------------------------------------------- weight files
def golden_copy(tmp_path: Path) -> Path:
    """magvit2_tiny's folder copied, so that a test may damage it."""
    golden = shared_path("golden", "magvit2")
    (tmp_path / "magvit2").mkdir()
    for name in ("config.json", "magvit2_tiny.ckpt"):
        (tmp_path / "magvit2" / name).write_bytes((golden / name).read_bytes())
    return tmp_path / "magvit2" / "magvit2_tiny.ckpt"


def pinned(digest: str) -> TokenizerSpec:
    spec = vt.get_spec("magvit2_tiny")
    return dataclasses.replace(spec, weights=tuple(dataclasses.replace(wf, sha256=digest)
                                                   if wf.filename.endswith(".ckpt") else wf for wf in spec.weights))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_checksum_mismatch_names_file_and_fix_before_anything_is_built(tmp_path, monkeypatch, damage):
    ckpt = golden_copy(tmp_path)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    data = bytearray(ckpt.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2:]
    else:
        data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    built = []
    monkeypatch.setattr("vision_tokenizers.magvit2.build", lambda *a: built.append(a))
    with REGISTRY.replaced(pinned(digest)), pytest.raises(vt.WeightsUnavailable) as info:
        vt.load("magvit2_tiny", weights_dir=tmp_path, offline=True)
    message = str(info.value)
    assert "\n" not in message and str(ckpt) in message and "does not match" in message
    assert "delete the file and let it download again, or replace it with the released file" in message
    assert built == []  # never half-loaded: the checksum is checked before the network is built


def test_truncated_checkpoint_without_checksum_is_unusable_not_half_loaded(tmp_path):
    ckpt = golden_copy(tmp_path)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size * 3 // 4])
    with pytest.raises(vt.WeightsUnavailable) as info:
        vt.load("magvit2_tiny", weights_dir=tmp_path, offline=True)
    message = str(info.value)
    assert "\n" not in message and str(ckpt) in message and "unreadable" in message and "delete the file" in message


def test_truncated_safetensors_of_a_multi_file_tokenizer(tmp_path):
    golden = shared_path("golden", "titok")
    for name in ("checkpoint/config.json", "checkpoint/model.safetensors", "hardcoded_overrides.json"):
        (tmp_path / "titok" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "titok" / name).write_bytes((golden / name).read_bytes())
    weights = tmp_path / "titok" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(vt.WeightsUnavailable) as info:
        vt.load("titok_tiny", weights_dir=tmp_path, offline=True)
    assert "\n" not in str(info.value) and str(weights) in str(info.value)


class FlakyServer(http.server.ThreadingHTTPServer):
    """Serves `payload` at any path, with Range support; drops the first full transfer half-way (once)."""

    daemon_threads = True

    def __init__(self, payload: bytes, drops: int = 1):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload, self.drops, self.ranges = payload, drops, []
        self.timeout = 5

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/taef2_encoder.pth"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FlakyServer

    def do_GET(self):  # noqa: N802 - http.server's naming
        payload, header = self.server.payload, self.headers.get("Range")
        self.server.ranges.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        if start >= len(payload):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(payload) - start))
        self.end_headers()
        body = payload[start:]
        if self.server.drops and not header:
            self.server.drops -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    payload = bytes(range(256)) * 4096  # 1 MiB
    srv = FlakyServer(payload)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_interrupted_url_download_resumes_with_a_range_request(tmp_path, server):
    digest = hashlib.sha256(server.payload).hexdigest()
    spec = TokenizerSpec("x", "taesd", 64, "continuous", (1,), 8,
                         weights=(WeightFile("taef2_encoder.pth", "taesd", url=server.url, sha256=digest),))
    files = resolve_weights(spec, tmp_path, offline=False)
    target = tmp_path / "taesd" / "taef2_encoder.pth"
    assert files == {"taef2_encoder.pth": target} and target.read_bytes() == server.payload
    half = len(server.payload) // 2
    assert server.ranges == [None, f"bytes={half}-"]  # resumed where the connection dropped, not started over
    assert not target.with_name("taef2_encoder.pth.part").exists()


def test_download_killed_half_way_resumes_in_the_next_run(tmp_path, server):
    target = tmp_path / "w.pth"
    with pytest.raises(http.client.IncompleteRead):
        download_url(server.url, target, retries=0, timeout=5)
    part = tmp_path / "w.pth.part"
    assert not target.exists() and part.stat().st_size == len(server.payload) // 2  # what arrived is kept
    download_url(server.url, target, hashlib.sha256(server.payload).hexdigest(), timeout=5)
    assert target.read_bytes() == server.payload and server.ranges[-1] == f"bytes={len(server.payload) // 2}-"


def test_download_with_wrong_checksum_is_deleted_and_never_placed(tmp_path, server):
    server.drops = 0
    target = tmp_path / "w.pth"
    with pytest.raises(vt.WeightsUnavailable) as info:
        download_url(server.url, target, "0" * 64, timeout=5)
    message = str(info.value)
    assert server.url in message and "does not match" in message and str(target) in message
    assert not target.exists() and not (tmp_path / "w.pth.part").exists()
