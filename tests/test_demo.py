"""The Gradio viewer: its request handling in-process, then the real page driven in headless Chromium.

The browser test starts `python -m vision_tokenizers.demo` on a free port (127.0.0.1), uploads a 512 px photo,
runs `taef2_512` (real weights) beside a tokenizer whose weights are missing, and checks the reconstruction, the
metrics and the "unavailable" reason appear. It uses Debian's chromium through Playwright's `executable_path`
(no browser download). Missing chromium/playwright/gradio is a skip on a workstation and a failure in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, shared_path
from vision_tokenizers.demo import InputRejected, prepare, render, run_tokenizers, status_markdown
from vision_tokenizers.playground import TokenizerPlayground

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
SERVER_START_TIMEOUT_S = 120
RESULT_TIMEOUT_MS = 120_000


def _need(what: str, fix: str):
    message = f"{what} not available ({fix})"
    if os.environ.get("CI"):
        pytest.fail(message + ": CI must run the browser test")
    pytest.skip(message)


@pytest.fixture(scope="module")
def tiny_state():
    playground = TokenizerPlayground(weights_dir=shared_path("golden"), offline=True)
    return prepare(["titok_tiny", "magvit2_256"], playground, preload=["titok_tiny", "magvit2_256"], lpips=False,
                   log=lambda _: None)


def test_unavailable_tokenizer_is_a_reason_not_a_crash(tiny_state):
    assert tiny_state.status["titok_tiny"] == "ready"
    assert tiny_state.status["magvit2_256"].startswith("unavailable: weights for magvit2_256 unavailable (offline")
    assert "| `magvit2_256` |" in status_markdown(tiny_state)
    photo = shared_path("images", "coco_val2017", "000000000785.jpg")
    results, table = run_tokenizers(tiny_state, str(photo), ["titok_tiny", "magvit2_256"])
    assert [r.tokenizer for r in results] == ["titok_tiny"]
    assert re.search(r"\| `titok_tiny` \| \d+\.\d\d \| 0\.\d{4} \| n/a \| 8 \| 0\.01172 \|", table), table
    assert "| `magvit2_256` | unavailable |" in table and "magvit2_256 unavailable: weights for" in table
    comparison, zoom, diff = render(results, 50, 50, 25, 4)
    assert comparison.width >= 2 * 256 and zoom.height >= 256 and diff.width >= 256
    moved, _, _ = render(results, 10, 90, 50, 8)  # the sliders re-render without running the model again
    assert moved.size == comparison.size


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixel data is a stub): what a decompression bomb shows Pillow."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_uploads_are_capped(tiny_state, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)).save(big)  # ~180 KB
    tiny_state.max_pixels = 50_000
    try:
        with pytest.raises(InputRejected, match=r"^big\.png: 300x200 = 0\.1 megapixels; the limit is 0\.05: "
                                                 r"downscale it.* or start the demo with --max-pixels"):
            run_tokenizers(tiny_state, str(big), ["titok_tiny"])
    finally:
        tiny_state.max_pixels = 40_000_000
    tiny_state.max_upload_bytes = 2**17
    try:
        with pytest.raises(InputRejected, match=r"^big\.png: 0\.2 MB \(18\d,\d{3} bytes\); the limit is 0\.125 MB: "
                                                 r"downscale or recompress it, or .*--max-upload-mb"):
            run_tokenizers(tiny_state, str(big), ["titok_tiny"])
    finally:
        tiny_state.max_upload_bytes = 20 * 1024 * 1024
    with pytest.raises(InputRejected, match="upload an image"):
        run_tokenizers(tiny_state, None, ["titok_tiny"])


def test_bad_uploads_get_one_line_naming_the_problem_and_the_fix(tiny_state, tmp_path):
    photo = shared_path("images", "coco_val2017", "000000000785.jpg").read_bytes()
    cases = {  # file name -> (its bytes, the problem the message must name)
        "truncated.jpg": (photo[: len(photo) // 3],
                          r"cannot be decoded as an image \(OSError: image file is truncated"),
        "notes.png": (b"shopping list: milk, eggs\n", r"cannot be decoded as an image \(UnidentifiedImageError: "
                                                       r"cannot identify image file 'notes\.png'\)"),
        "empty.jpg": (b"", r"empty file \(0 bytes\)"),
        "wide.png": (png_header_only(10_000, 5_000), r"10000x5000 = 50\.0 megapixels; the limit is 40: downscale"),
        "bomb.png": (png_header_only(30_000, 30_000), r"too many pixels to decode safely \(Image size \(900000000 "
                                                      r"pixels\) exceeds limit"),
    }
    for name, (data, problem) in cases.items():
        upload = tmp_path / "gradio-upload-dir" / name  # gradio keeps the user's file name inside a temporary folder
        upload.parent.mkdir(exist_ok=True)
        upload.write_bytes(data)
        with pytest.raises(InputRejected) as caught:
            run_tokenizers(tiny_state, str(upload), ["titok_tiny"])
        message = str(caught.value)
        assert re.match(rf"{re.escape(name)}: {problem}", message), message
        assert "\n" not in message and "gradio-upload-dir" not in message, message  # one line, no temporary path
        assert re.search(r"(re-save it as PNG or JPEG|downscale it).* upload that", message), message


def test_a_failing_model_is_a_row_not_a_lost_request(tiny_state, monkeypatch):
    real_measure = tiny_state.playground.measure

    def measure(image, name, **kwargs):
        if name == "magvit2_256":
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
        return real_measure(image, name, **kwargs)

    monkeypatch.setattr(tiny_state.playground, "measure", measure)
    photo = shared_path("images", "coco_val2017", "000000000785.jpg")
    results, table = run_tokenizers(tiny_state, str(photo), ["magvit2_256", "titok_tiny"])
    assert [r.tokenizer for r in results] == ["titok_tiny"]  # the model after the failing one still ran
    assert "| `magvit2_256` | failed |" in table
    assert "magvit2_256 failed on this image (RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB)" in table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVING = "* Running on local URL:"  # gradio prints this once its server accepts connections
PORT_TAKEN = "Cannot find empty port"  # gradio, when the port it was given cannot be bound
PORT_ATTEMPTS = 3


class _Output(threading.Thread):
    """Copies a child's output to `log` line by line (the pipe never fills). `decided` is set when the child says it
    serves (`serving` is then True) or when its output ends."""

    def __init__(self, proc: subprocess.Popen, log: Path):
        super().__init__(daemon=True)
        self.proc, self.log, self.serving, self.decided = proc, log, False, threading.Event()

    def run(self) -> None:
        with open(self.log, "w") as fh:
            for line in self.proc.stdout:
                fh.write(line)
                fh.flush()
                if line.startswith(SERVING):
                    self.serving = True
                    self.decided.set()
        self.decided.set()


def _stop(proc: subprocess.Popen, output: _Output) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    output.join(10)  # the log is complete once the child's output has ended


def _start_demo(args: list[str], log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, _Output, str] | None:
    """The demo on a free port, returned once it says it serves; None when the port was taken before it bound it."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vision_tokenizers.demo", "--port", str(port), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    output = _Output(proc, log)
    output.start()
    answered = output.decided.wait(SERVER_START_TIMEOUT_S)
    if answered and output.serving:
        return proc, output, f"http://127.0.0.1:{port}/"
    _stop(proc, output)
    text = log.read_text()
    if not answered:
        pytest.fail(f"demo did not say it serves on port {port} within {SERVER_START_TIMEOUT_S} s:\n{text[-3000:]}")
    if PORT_TAKEN in text:
        return None
    pytest.fail(f"demo exited with {proc.returncode}:\n{text[-3000:]}")


@contextlib.contextmanager
def running_demo(args: list[str], log: Path, env: dict[str, str] | None = None):
    """`python -m vision_tokenizers.demo ARGS` on a free port of 127.0.0.1: yields (base url, log); always stopped.

    Ready is what the child says, not a polling loop: its output is read line by line (and copied to `log`) until
    gradio's "Running on local URL" line, printed once the server accepts connections, or until the child exits. A
    port another process took between choosing it and the child binding it is retried on another port."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        _need("gradio", "pip install -e '.[demo]'")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
           **(env or {})}
    for _ in range(PORT_ATTEMPTS):
        started = _start_demo(args, log, env)
        if started is not None:
            break
    else:
        pytest.fail(f"demo: {PORT_ATTEMPTS} free ports were each taken before it bound them:\n{log.read_text()}")
    proc, output, url = started
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # it said it serves: the first request is answered
            assert resp.status == 200, resp.status
        yield url, log
    finally:
        _stop(proc, output)


@pytest.fixture
def demo_server(tmp_path):
    weights = shared_path("weights", "taesd").parent
    with running_demo(["--models", "taef2_512,magvit2_256", "--offline"], tmp_path / "demo.log",
                      {"VTOK_WEIGHTS": str(weights)}) as server:
        yield server


@pytest.mark.slow
def test_demo_in_a_real_browser(demo_server, tmp_path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("playwright", "pip install -e '.[dev]'")
    chromium = next((c for c in CHROMIUM_CANDIDATES if Path(c).is_file()), shutil.which("chromium"))
    if not chromium:
        _need("chromium", "apt-get install -y chromium")
    url, log = demo_server
    assert "vtok demo on http://127.0.0.1:" in log.read_text()  # bound to this machine only by default
    photo = tmp_path / "photo_512.png"  # a 512 px photo: what taef2_512 sees, no resize
    with Image.open(shared_path("images", "coco_val2017", "000000087038.jpg")) as im:
        im.convert("RGB").crop((64, 0, 576, 480)).resize((512, 512), Image.Resampling.BICUBIC).save(photo)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url)
            page.wait_for_selector("#run", timeout=30_000)
            page.locator("#input-image input[type=file]").set_input_files(str(photo))
            page.wait_for_selector("#input-image img", timeout=30_000)
            page.get_by_label("magvit2_256 (unavailable)").check()
            expect(page.get_by_label("taef2_512", exact=True)).to_be_checked()  # preloaded, selected
            started = time.perf_counter()
            page.click("#run")
            expect(page.locator("#metrics")).to_contain_text("taef2_512", timeout=RESULT_TIMEOUT_MS)
            page.wait_for_function("() => { const i = document.querySelector('#comparison img');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=RESULT_TIMEOUT_MS)
            click_to_result_s = time.perf_counter() - started
            metrics = page.locator("#metrics").inner_text()
            size = page.evaluate("() => { const i = document.querySelector('#comparison img');"
                                 " return [i.naturalWidth, i.naturalHeight]; }")
            for element in ("#zoom img", "#difference img"):
                expect(page.locator(element)).to_be_visible()
            # dragging the zoom-window slider re-renders the crops from the kept result (no model call)
            before = page.locator("#zoom img").get_attribute("src")
            slider = page.locator("input[type=range]").nth(2)
            slider.scroll_into_view_if_needed()
            box = slider.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.22, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            expect(page.locator("#zoom img")).not_to_have_attribute("src", before, timeout=30_000)
            screenshot = tmp_path / "demo.png"
            page.screenshot(path=str(screenshot), full_page=True)
            # a text file named .png: the page shows one line naming the file, the problem and the fix
            notes = tmp_path / "notes.png"
            notes.write_text("shopping list: milk, eggs\n")
            page.get_by_role("button", name="Remove Image").click()
            page.locator("#input-image input[type=file]").set_input_files(str(notes))
            page.click("#run")
            error = page.get_by_text("notes.png: cannot be decoded as an image (UnidentifiedImageError")
            expect(error).to_be_visible(timeout=30_000)
            bad_upload_message = error.inner_text()
        finally:
            browser.close()

    row = next(line for line in metrics.splitlines() if line.startswith("taef2_512"))
    psnr = float(row.split()[1])
    assert 25 < psnr < 40, metrics  # TAEF2 on a real photo: ~29 dB
    assert "131072" in row and "16" in row.split()  # tokens, bits per pixel
    assert re.search(r"\d+ ms\s+\d+ ms", row), row  # encode and decode times
    assert "magvit2_256" in metrics and "unavailable" in metrics
    assert size[0] >= 2 * 512  # original | taef2_512, each at 512 px
    assert screenshot.stat().st_size > 10_000
    assert "re-save it as PNG or JPEG" in bad_upload_message and "/tmp/" not in bad_upload_message, bad_upload_message
    assert "Traceback" not in log.read_text()  # a bad upload is the user's input, not a server fault
    (tmp_path / "timing.json").write_text(json.dumps({"click_to_result_s": click_to_result_s, "row": row}))
    print(f"\ndemo: taef2_512 on a 512 px photo, click to result {click_to_result_s:.2f} s; screenshot {screenshot}")


def test_demo_binds_localhost_and_caps_uploads_by_default():
    from vision_tokenizers.demo import (
        DEFAULT_CONCURRENCY,
        DEFAULT_MAX_PIXELS,
        DEFAULT_MAX_QUEUE,
        DEFAULT_MAX_UPLOAD_MB,
        build_parser,
    )

    args = build_parser().parse_args([])
    assert (args.host, args.port, args.models) == ("127.0.0.1", 7860, None)
    assert (args.max_upload_mb, args.max_pixels) == (DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_PIXELS) == (20, 40_000_000)
    assert (args.concurrency, args.max_queue) == (DEFAULT_CONCURRENCY, DEFAULT_MAX_QUEUE) == (1, 16)
    assert "--max-queue N" in build_parser().format_help() and "Queue is full" in build_parser().format_help()
    for bad in (["--max-queue", "0"], ["--concurrency", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    assert build_parser().parse_args(["--models", "taef2_512,titok_tiny"]).models == ["taef2_512", "titok_tiny"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--models", "nope"])
