"""The Gradio viewer: its request handling in-process, then the real page driven in headless Chromium.

The browser test starts `python -m vision_tokenizers.demo` on a free port (127.0.0.1), uploads a 512 px photo,
runs `taef2_512` (real weights) beside a tokenizer whose weights are missing, and checks the reconstruction, the
metrics and the "unavailable" reason appear. It uses Debian's chromium through Playwright's `executable_path`
(no browser download). Missing chromium/playwright/gradio is a skip on a workstation and a failure in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def test_uploads_are_capped(tiny_state, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    tiny_state.max_pixels = 50_000
    try:
        with pytest.raises(InputRejected, match=r"300x200 = 0\.1 megapixels; the limit is 0"):
            run_tokenizers(tiny_state, str(big), ["titok_tiny"])
    finally:
        tiny_state.max_pixels = 40_000_000
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputRejected, match="not a readable image"):
        run_tokenizers(tiny_state, str(junk), ["titok_tiny"])
    with pytest.raises(InputRejected, match="upload an image"):
        run_tokenizers(tiny_state, None, ["titok_tiny"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_server(tmp_path):
    try:
        import gradio  # noqa: F401
    except ImportError:
        _need("gradio", "pip install -e '.[demo]'")
    weights = shared_path("weights", "taesd").parent
    port = _free_port()
    log = tmp_path / "demo.log"
    env = {**os.environ, "VTOK_WEIGHTS": str(weights), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "vision_tokenizers.demo", "--port", str(port),
                                 "--models", "taef2_512,magvit2_256", "--offline"],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"demo did not answer on {url} within {SERVER_START_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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
    (tmp_path / "timing.json").write_text(json.dumps({"click_to_result_s": click_to_result_s, "row": row}))
    print(f"\ndemo: taef2_512 on a 512 px photo, click to result {click_to_result_s:.2f} s; screenshot {screenshot}")


def test_demo_binds_localhost_and_caps_uploads_by_default():
    from vision_tokenizers.demo import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, build_parser

    args = build_parser().parse_args([])
    assert (args.host, args.port, args.models) == ("127.0.0.1", 7860, None)
    assert (args.max_upload_mb, args.max_pixels) == (DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_PIXELS) == (20, 40_000_000)
    assert build_parser().parse_args(["--models", "taef2_512,titok_tiny"]).models == ["taef2_512", "titok_tiny"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--models", "nope"])
