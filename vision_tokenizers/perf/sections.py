"""The four measurements of `vtok perf`. Each returns a `Section`; an exception inside one becomes its `error` and the
others still run (`run_section`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vision_tokenizers import loader
from vision_tokenizers.evaluate import evaluate

Items = list[tuple[str, Path]]


@dataclass
class Section:
    name: str
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def run_section(name: str, measure: Callable[[Section], None]) -> Section:
    """`measure(section)` fills the section; whatever it raises is its one-line `error`, never the run's end."""
    section = Section(name)
    try:
        measure(section)
    except Exception as exc:  # noqa: BLE001 - a failing part is reported and the other parts go on
        section.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    return section


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer around it measures the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(runs: list[Callable[[], int]], repeats: int) -> list[tuple[int, float]]:
    """(images, best seconds) of each run, timed round-robin `repeats` times (A B C, A B C, ...): the best pass is
    the one least disturbed by other work on the host, and a burst of load hits every run alike, not one of them."""
    best = [(0, float("inf"))] * len(runs)
    for _ in range(repeats):
        for k, run in enumerate(runs):
            started = time.perf_counter()
            count = run()
            best[k] = (count, min(best[k][1], time.perf_counter() - started))
    return best


# --------------------------------------------------------------------------------------------------- data pipeline


def worker_counts() -> list[tuple[int, str]]:
    """(workers, label): 0, 1, 2 and all (`default_workers()`), each count once."""
    every = loader.default_workers()
    counts: dict[int, str] = {}
    for workers in (0, 1, 2, every):
        counts[workers] = f"{workers} (all)" if workers == every else str(workers)
    return list(counts.items())


def pipeline(section: Section, items: Items, resolution: int, batch_size: int, repeats: int) -> None:
    """img/s of `loader.batches` alone (decode, EXIF, ADM crop, collate) for each worker count."""
    for _, path in items:  # the files in the page cache first, so that no count pays for the disk alone
        path.read_bytes()

    counts = worker_counts()

    def run(workers: int) -> Callable[[], int]:
        return lambda: sum(len(ids) for ids, _ in loader.batches(items, resolution, batch_size, workers=workers))
    for (workers, label), (count, seconds) in zip(counts, _best_of([run(w) for w, _ in counts], repeats),
                                                  strict=True):
        section.rows.append({"workers": workers, "label": label, "images": count, "seconds": seconds,
                             "img_per_s": count / seconds})
    section.notes.append(f"{len(items)} JPEGs cropped to {resolution} px, batches of {batch_size}; best of {repeats} "
                         "round-robin passes; worker start-up included (one pass of a dataset pays it once)")


# --------------------------------------------------------------------------------------------- harness vs bare loop


def harness(section: Section, tokenizer, items: Items, resolution: int, batch_size: int, workers: int,
            repeats: int, lpips=None, fid=None, metrics_note: str = "") -> None:
    """Throughput of the bare model loop (encode + decode of the pre-made batches, nothing else) against `evaluate`
    on the same batches: pixel metrics only, then with LPIPS and Inception (when given), then the whole streaming
    path (files -> DataLoader workers -> `evaluate`). Ratios are harness img/s ÷ bare img/s."""
    device = tokenizer.device
    premade = list(loader.batches(items, resolution, batch_size))

    @torch.no_grad()
    def bare(batches: Iterable = premade) -> int:
        count = 0
        for ids, pixels in batches:
            tokenizer.decode(tokenizer.encode(pixels.to(device).float() / 255))
            sync(device)
            count += len(ids)
        return count

    def harnessed(batches_of: Callable[[], Iterable], with_metrics: bool) -> Callable[[], int]:
        def run() -> int:
            result = evaluate(tokenizer, batches_of(), lpips=lpips if with_metrics else None,
                              fid=fid if with_metrics else None, reduce=False)
            sync(device)
            if result.failed:
                raise RuntimeError(f"{len(result.failed)} image(s) failed: {next(iter(result.failed.values()))}")
            return len(result.per_image)
        return run

    bare(premade[:1])  # warm-up, excluded: first calls allocate and pick kernels
    harnessed(lambda: premade[:1], True)()
    paths: list[tuple[str, Callable[[], int]]] = [
        ("bare loop: encode + decode, pre-made batches", bare),
        ("evaluate, pre-made batches, pixel metrics", harnessed(lambda: premade, False)),
    ]
    if lpips is not None or fid is not None:
        paths.append(("evaluate, pre-made batches, all metrics", harnessed(lambda: premade, True)))
    which = "all metrics" if lpips is not None or fid is not None else "pixel metrics"
    paths.append((f"files -> {workers} DataLoader workers -> evaluate, {which}",
                  harnessed(lambda: loader.batches(items, resolution, batch_size, workers=workers), True)))
    timed = _best_of([fn for _, fn in paths], repeats)
    bare_rate = timed[0][0] / timed[0][1]
    for (name, _), (count, seconds) in zip(paths, timed, strict=True):
        section.rows.append({"path": name, "images": count, "seconds": seconds, "img_per_s": count / seconds,
                             "ratio_to_bare": count / seconds / bare_rate})
    section.notes += [f"tokenizer {tokenizer.spec.name} at {resolution} px ({getattr(tokenizer, 'weights_note', '')}),"
                      f" {tokenizer.device}, batches of {batch_size}, {len(items)} images, best of {repeats} "
                      "round-robin passes; warm-up excluded",
                      f"metrics: {metrics_note}"]


# ------------------------------------------------------------------------------------------------ child processes


def child(args: list[str], timeout: float | None) -> dict:
    """Run `python -m vision_tokenizers.perf.child ARGS` and return its JSON line; a timeout or a failure raises
    with the reason (its last stderr line)."""
    command = [sys.executable, "-m", "vision_tokenizers.perf.child", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exit status {proc.returncode}: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss(section: Section, folder: Path, counts: list[int], common: list[str], timeout: float | None) -> None:
    """Peak RSS of a fresh process streaming the first N images of `folder` through the benchmark's path, per N."""
    for count in counts:
        try:
            out = child(["rss", "--dataset", str(folder), "--num-images", str(count), *common], timeout)
        except subprocess.TimeoutExpired:
            section.rows.append({"images": count, "error": f"over {timeout:.0f} s"})
            continue
        except RuntimeError as exc:
            section.rows.append({"images": count, "error": str(exc)})
            continue
        section.rows.append({k: out[k] for k in ("images", "peak_rss_mb", "workers_peak_rss_mb", "seconds")})
        section.notes = [f"tokenizer {out['tokenizer']} ({out['weights']}) at {out['resolution']} px; metrics: "
                         f"{out['metrics']}; peak RSS of the process running evaluate (getrusage RUSAGE_SELF) and of "
                         "the largest DataLoader worker (RUSAGE_CHILDREN)"]
    done = [row for row in section.rows if "peak_rss_mb" in row]
    if len(done) >= 2:
        section.notes.append(f"growth {done[-1]['peak_rss_mb'] - done[0]['peak_rss_mb']:+.0f} MB from "
                             f"{done[0]['images']} to {done[-1]['images']} images")


def random_weights(section: Section, names: list[str], common: list[str], images: int, timeout: float) -> None:
    """Encode / decode seconds per image (batch 1) of each full-size tokenizer with random weights, each in its own
    process stopped after `timeout` seconds; unsupported ones are listed with the reason."""
    from vision_tokenizers.random_weights import NO_CONFIG, supports_random_weights

    for name in names:
        if not supports_random_weights(name):
            section.rows.append({"tokenizer": name, "status": "skipped", "reason": NO_CONFIG})
            continue
        try:
            out = child(["speed", "--tokenizer", name, "--images", str(images), *common], timeout)
        except subprocess.TimeoutExpired:
            why = f"over {timeout:.0f} s on this machine (building and running it)"
            section.rows.append({"tokenizer": name, "status": "skipped", "reason": why})
            continue
        except RuntimeError as exc:
            section.rows.append({"tokenizer": name, "status": "failed", "reason": str(exc)})
            continue
        section.rows.append({"tokenizer": name, "status": "ok", "resolution": out["resolution"],
                             "parameters": out["parameters"], "images": len(out["encode_s"]),
                             "encode_s_per_image": sum(out["encode_s"]) / len(out["encode_s"]),
                             "decode_s_per_image": sum(out["decode_s"]) / len(out["decode_s"])})
