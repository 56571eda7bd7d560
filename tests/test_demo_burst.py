"""The demo under a burst: 20 requests, 4 at once, against a real server on 127.0.0.1.

The server runs `magvit2_tiny` (golden weights, tens of ms a request) with `--concurrency 1`, once with the default
queue (16 waiting: four clients never fill it, so all 20 get their answer) and once with `--max-queue 2`, which four
clients overrun. Each request must end in a result, its bad-upload message, or an immediate "Queue is full" (HTTP 503):
never a hang, never a stream that closes without an answer. Every fifth request uploads a bad file. Afterwards the
server must still answer a normal request and name each bad upload's problem. Requests go through gradio's documented
HTTP API (`/gradio_api/upload`, `/gradio_api/call/reconstruct`), every call with a timeout.
"""

from __future__ import annotations

import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
from PIL import Image

from tests.helpers import shared_path
from tests.test_demo import running_demo
from vision_tokenizers.demo import DEFAULT_MAX_QUEUE

BURST, AT_ONCE = 20, 4
MAX_UPLOAD_MB, MAX_PIXELS = 1, 1_000_000
REQUEST_TIMEOUT_S = 30  # one request, queueing included: well under 1 s of model time each, 3 at most ahead of it
BURST_TIMEOUT_S = 90
METRICS_ROW = re.compile(r"\| `magvit2_tiny` \| (\d+\.\d\d) \| 0\.\d{4} \| n/a \| 256 \|")


def _uploads() -> dict[str, tuple[str, bytes, str]]:
    """kind -> (file name, bytes, what the answer must say): a photo and three bad uploads."""
    photo = shared_path("images", "coco_val2017", "000000000785.jpg").read_bytes()
    too_big = io.BytesIO()
    Image.new("RGB", (1200, 1000), (90, 140, 200)).save(too_big, "PNG")  # 1.2 megapixels in a few KB
    return {
        "photo": ("photo.jpg", photo, ""),
        "truncated": ("truncated.jpg", photo[: len(photo) // 3],
                      "truncated.jpg: cannot be decoded as an image (OSError: image file is truncated"),
        "not_an_image": ("notes.png", b"shopping list: milk, eggs\n",
                         "notes.png: cannot be decoded as an image (UnidentifiedImageError"),
        "too_many_pixels": ("flat.png", too_big.getvalue(), "flat.png: 1200x1000 = 1.2 megapixels; the limit is 1: "
                                                           "downscale it"),
    }


def _reconstruct(client, base: str, upload: tuple[str, bytes, str]) -> tuple[str, str, float]:
    """One request as a browser makes it (upload, then the Reconstruct event): (outcome, detail, seconds).

    outcome: "result" (detail: the metrics table), "rejected" (detail: the message shown), "queue_full" (the 503's
    detail) or "dropped" (the stream ended without an answer)."""
    name, data, _ = upload
    started = time.perf_counter()
    response = client.post(f"{base}/upload", files=[("files", (name, data, "application/octet-stream"))])
    response.raise_for_status()
    image = {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}
    response = client.post(f"{base}/call/reconstruct", json={"data": [image, ["magvit2_tiny"], 0, 50, 50, 25, 4]})
    if response.status_code == 503:
        return "queue_full", response.json()["detail"], time.perf_counter() - started
    response.raise_for_status()
    event = None
    with client.stream("GET", f"{base}/call/reconstruct/{response.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("complete", "error"):
                payload = json.loads(line.removeprefix("data: "))
                if event == "complete":
                    return "result", payload[3], time.perf_counter() - started  # outputs[3]: the metrics table
                return "rejected", (payload or {}).get("error") or "", time.perf_counter() - started
    return "dropped", f"stream closed after event {event!r}", time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.parametrize("max_queue", [DEFAULT_MAX_QUEUE, 2], ids=["default-queue", "queue-of-2"])
def test_a_burst_is_queued_with_a_bound_and_every_request_is_answered(tmp_path, max_queue):
    httpx = pytest.importorskip("httpx", reason="httpx comes with gradio: pip install -e '.[demo]'")
    golden = shared_path("golden")
    uploads = _uploads()
    kinds = ["photo", "photo", "photo", "photo", "truncated", "photo", "photo", "photo", "photo", "not_an_image"] * 2
    kinds[14] = "too_many_pixels"
    args = ["--models", "magvit2_tiny", "--weights-dir", str(golden), "--offline", "--no-lpips",
            "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_PIXELS)]
    if max_queue != DEFAULT_MAX_QUEUE:  # the default run shows what an unconfigured server does
        args += ["--max-queue", str(max_queue)]
    with running_demo(args, tmp_path / "demo.log") as (url, log), \
            httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        base = url + "gradio_api"
        assert url.startswith("http://127.0.0.1:") and "vtok demo on http://127.0.0.1:" in log.read_text()

        # bytes over --max-upload-mb are refused while uploading, before any handler runs
        oversized = client.post(f"{base}/upload", files=[("files", ("huge.png", b"\0" * (MAX_UPLOAD_MB * 2**20 + 1),
                                                                     "image/png"))])
        assert oversized.status_code == 413 and "exceeded maximum allowed size" in oversized.text, oversized.text

        started = time.perf_counter()
        with ThreadPoolExecutor(AT_ONCE) as pool:
            futures = [pool.submit(_reconstruct, client, base, uploads[kind]) for kind in kinds]
            done, pending = wait(futures, timeout=BURST_TIMEOUT_S)
            assert not pending, f"{len(pending)} of {BURST} requests still waiting after {BURST_TIMEOUT_S} s"
        burst_s = time.perf_counter() - started
        answers = [f.result() for f in futures]  # a request that raised (HTTP error, timeout) fails the test here

        for kind, (outcome, detail, _) in zip(kinds, answers, strict=True):
            assert outcome != "dropped", (kind, detail)
            if outcome == "queue_full":
                assert re.fullmatch(rf"Queue is full\. Max size is {max_queue} and size is \d+\.", detail), detail
            elif kind == "photo":
                assert outcome == "result" and METRICS_ROW.search(detail), (outcome, detail)
            else:
                assert outcome == "rejected" and detail.startswith(uploads[kind][2]), (kind, outcome, detail)
                assert "\n" not in detail and "/tmp/" not in detail, detail
        counts = {o: sum(a[0] == o for a in answers) for o in ("result", "rejected", "queue_full")}
        assert sum(counts.values()) == BURST
        assert counts["result"] >= 1  # the queue was never full for the first arrival
        if max_queue >= AT_ONCE:  # one running, at most AT_ONCE - 1 waiting: the bound is never reached
            assert counts["queue_full"] == 0, answers

        # the server still serves: a normal request, then each bad upload named with its fix (no contention now)
        outcome, table, after_s = _reconstruct(client, base, uploads["photo"])
        assert outcome == "result", (outcome, table)
        # same photo, same deterministic model: every answer under load carries the quiet server's numbers
        psnrs = {METRICS_ROW.search(d).group(1) for o, d, _ in answers if o == "result"}
        assert psnrs == {METRICS_ROW.search(table).group(1)}, (psnrs, table)
        for kind in ("truncated", "not_an_image", "too_many_pixels"):
            outcome, message, _ = _reconstruct(client, base, uploads[kind])
            assert outcome == "rejected" and message.startswith(uploads[kind][2]), (kind, outcome, message)
            assert re.search(r"(re-save it as PNG or JPEG|downscale it).* upload that", message), message
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]  # bad input is the user's, not a server fault

    slowest = max(a[2] for a in answers)
    print(f"\ndemo burst: {BURST} requests, {AT_ONCE} at once, queue {max_queue}: {counts['result']} results, "
          f"{counts['rejected']} bad uploads answered, {counts['queue_full']} 'Queue is full', 0 dropped; "
          f"{burst_s:.2f} s for all, slowest answer {slowest:.2f} s; a normal request afterwards {after_s:.2f} s")
