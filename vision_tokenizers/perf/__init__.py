"""`vtok perf`: how fast the benchmark's own machinery is, in one run and one table.

Four sections, each measured on its own and reported even when another fails:

- pipeline: img/s of the streaming image path (`vision_tokenizers.loader`) for 0, 1, 2 and all workers;
- harness: `evaluate` (metrics, rounding, bookkeeping; then the whole streaming path) against the bare
  encode/decode loop on the same batches;
- rss: peak RSS of a fresh process streaming N images through the benchmark's path, for two N (flat is the goal);
- speed: encode / decode seconds per image of each full-size tokenizer with random weights.

Numbers are printed, never asserted: they depend on the machine and on what else it runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from vision_tokenizers.loader import default_workers
from vision_tokenizers.perf import sections as S
from vision_tokenizers.perf.images import default_cache, generated_folder

SECTIONS = ("pipeline", "harness", "rss", "speed")


@dataclass
class PerfOptions:
    dataset: Path | None = None  # a folder of images; None: generated 640x480 JPEGs
    cache: Path | None = None
    resolution: int = 256
    batch_size: int = 8
    device: str = "cpu"
    pipeline_images: int = 256
    tokenizer: str = "taef2_512"  # harness and rss
    weights_dir: str | None = None
    model_resolution: int | None = 256  # None: the tokenizer's own
    harness_images: int = 32
    metrics: str = "all"
    repeats: int = 2
    rss_counts: tuple[int, ...] = (400, 1600)
    rss_timeout_s: float | None = None
    tokenizers: tuple[str, ...] = ()  # speed section
    speed_images: int = 1
    speed_warmup: int = 1
    speed_timeout_s: float = 180.0
    dtype: str = "fp32"
    sections: tuple[str, ...] = SECTIONS


def machine() -> dict:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": cpus, "gpu": gpu, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(terse=True), "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_perf(opts: PerfOptions) -> dict:
    """Measure the chosen sections; returns the JSON-ready results (`format_table` prints them)."""
    from vision_tokenizers.images import list_images
    from vision_tokenizers.perf.backbones import metric_nets
    from vision_tokenizers.perf.child import load_tokenizer

    cache = opts.cache or default_cache()
    largest = max([opts.pipeline_images, opts.harness_images, *opts.rss_counts])
    folder = opts.dataset or generated_folder(largest, cache)
    paths = list_images(folder)
    items = [(p.stem, p) for p in paths]
    device = torch.device(opts.device)
    results: dict = {"started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
                     "dataset": str(folder) + ("" if opts.dataset else " (generated 640x480 JPEGs, seeded)"),
                     "sections": {}}
    out = results["sections"]
    if "pipeline" in opts.sections:
        out["pipeline"] = S.run_section("pipeline", lambda s: S.pipeline(
            s, items[:opts.pipeline_images], opts.resolution, opts.batch_size, opts.repeats)).as_dict()
    if "harness" in opts.sections:
        def harness(section: S.Section) -> None:
            tokenizer, weights = load_tokenizer(opts.tokenizer, device, opts.weights_dir)
            tokenizer.weights_note = weights
            lpips, fid, note = metric_nets(opts.metrics, device, cache)
            S.harness(section, tokenizer, items[:opts.harness_images], opts.model_resolution or tokenizer.resolution,
                      opts.batch_size, default_workers(), opts.repeats, lpips, fid, note)
        out["harness"] = S.run_section("harness", harness).as_dict()
    common = ["--device", opts.device, "--cache", str(cache)]
    if "rss" in opts.sections:
        rss_args = [*common, "--tokenizer", opts.tokenizer, "--batch-size", str(opts.batch_size), "--workers",
                    str(default_workers()), "--metrics", opts.metrics]
        rss_args += ["--weights-dir", opts.weights_dir] if opts.weights_dir else []
        rss_args += ["--resolution", str(opts.model_resolution)] if opts.model_resolution else []
        out["rss"] = S.run_section("rss", lambda s: S.rss(s, folder, list(opts.rss_counts), rss_args,
                                                            opts.rss_timeout_s)).as_dict()
    if "speed" in opts.sections:
        speed_args = [*common, "--dtype", opts.dtype, "--warmup", str(opts.speed_warmup)]
        out["speed"] = S.run_section("speed", lambda s: S.random_weights(
            s, list(opts.tokenizers), speed_args, opts.speed_images, opts.speed_timeout_s)).as_dict()
    return results


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def format_table(results: dict) -> str:
    """The results as one plain-text table per section, with its notes and any error."""
    m = results["machine"]
    lines = [f"vtok perf  {results['started']}  {m['cpus']} CPU(s), torch {m['torch']} ({m['torch_threads']} threads)"
             f", GPU: {m['gpu'] or 'none'}, load average {m['load_average']}", f"images: {results['dataset']}", ""]
    titles = {"pipeline": ("data pipeline", ("workers", "images", "seconds", "img/s")),
              "harness": ("harness vs bare model loop (same batches)", ("path", "images", "img/s", "ratio")),
              "rss": ("peak RSS, fresh process per run", ("images", "peak RSS MB", "workers' peak MB", "seconds")),
              "speed": ("--random-weights, full size, batch 1", ("tokenizer", "res", "encode s/img", "decode s/img"))}
    for name, section in results["sections"].items():
        title, header = titles[name]
        rows = [_cells(name, row) for row in section["rows"]]
        lines.append(f"== {title}" + (f"  [FAILED: {section['error']}]" if section["error"] else ""))
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        lines += [f"  note: {note}" for note in section["notes"]]
        lines.append("")
    return "\n".join(lines)


def _cells(name: str, row: dict) -> tuple:
    if name == "pipeline":
        return row["label"], row["images"], _fmt(row["seconds"]), _fmt(row["img_per_s"])
    if name == "harness":
        return row["path"], row["images"], _fmt(row["img_per_s"]), f"{row['ratio_to_bare']:.3f}"
    if name == "rss":
        if "error" in row:
            return row["images"], f"failed: {row['error']}", "", ""
        return row["images"], f"{row['peak_rss_mb']:.0f}", f"{row['workers_peak_rss_mb']:.0f}", _fmt(row["seconds"])
    if row["status"] != "ok":
        return row["tokenizer"], "", f"{row['status']}: {row['reason']}", ""
    return row["tokenizer"], row["resolution"], _fmt(row["encode_s_per_image"]), _fmt(row["decode_s_per_image"])


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
