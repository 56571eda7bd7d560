"""The results store (append-only JSONL) and its aggregation into tables, plots and reconstruction grids.

Plain functions, no pytest, no models. A report directory looks like::

    records.jsonl              written by the main pytest process (and `records.<worker>.jsonl` by xdist workers)
    recon/<tokenizer>/<image_id>.png, originals/<resolution>/<image_id>.png
    benchmark_results.csv      one row per image x tokenizer
    summary.md, summary.png    the report
    grid.png (+ grid_<res>.png when tokenizers differ in resolution)
    report.json                the aggregated numbers

Record types (one JSON object per line): ``run``, ``image``, ``dataset``, ``timing``, ``skip``; see `aggregate`.
Results are keyed by (tokenizer, image id, metric): the latest record wins, so a rerun into the same directory
appends and the aggregation dedupes. Records may carry ``ts`` (epoch seconds) to order several record files.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import statistics
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RECORDS_FILE = "records.jsonl"
RECORDS_GLOB = "records*.jsonl"

# metric key -> (label, unit, direction (+1 higher is better, -1 lower, 0 neither), decimals)
METRICS: dict[str, tuple[str, str, int, int]] = {
    "psnr": ("PSNR", "dB", +1, 2),
    "ssim": ("SSIM", "", +1, 4),
    "lpips": ("LPIPS", "", -1, 4),
    "mae": ("MAE", "", -1, 4),
    "rmse": ("RMSE", "", -1, 4),
    "fid": ("rFID", "", -1, 2),
    "bpp": ("bits/pixel", "", 0, 4),
    "codebook_usage": ("codebook usage", "", 0, 4),
    "unique_codes": ("unique codes", "", 0, 0),
    "entropy_bits": ("entropy (bits)", "", 0, 2),
    "perplexity": ("perplexity", "", 0, 1),
}
QUALITY = ("psnr", "ssim", "lpips", "mae", "rmse")
TOKEN_STATS = ("codebook_usage", "unique_codes", "entropy_bits", "perplexity")
STAGES = ("encode", "decode")
GRID_IMAGES = 6
GRID_CELL = 256

CONVENTIONS = (
    "PSNR is the mean of per-image PSNR (not PSNR of the pooled MSE), data range 255 on 8-bit images.",
    "SSIM: Gaussian window 11, sigma 1.5, population covariance, K1 0.01 / K2 0.03, computed per RGB channel "
    "and averaged (not luma).",
    "LPIPS: AlexNet, v0.1 linear heads, inputs scaled to [-1, 1].",
    "MAE and RMSE on pixel values scaled to [0, 1].",
    "Every metric compares 8-bit images (round(x * 255), never floor) at the tokenizer's resolution, on the same "
    "centre crop; reconstructions are never resized back to the source size.",
    "'±' is the sample standard deviation across images (ddof 1).",
    "rFID is computed once over the whole image set (feature statistics merged, never averaged per shard); "
    "backend and n are given with the number.",
    "bits/pixel: storage of one image's tokens (num tokens x bits per token) per input pixel.",
    "Timings: warm-up excluded, device synchronised, median ± IQR over rounds of one batch; per image = batch "
    "time / batch size; images/s = batch size / median.",
    "Results are keyed by (tokenizer, image, metric); when a directory holds several runs, the latest record wins.",
)


# --------------------------------------------------------------------------------------------------- the store


def append_record(path: str | os.PathLike, obj: Mapping[str, Any]) -> None:
    """Append one record as one JSON line (a single O_APPEND write, flushed), creating the file if needed.

    If the file ends in a partial line (a killed writer), a newline is written first so the partial line stays a
    single malformed line and this record stays intact.
    """
    if "type" not in obj:
        raise ValueError(f"record without 'type': {obj!r}")
    line = json.dumps(_jsonable(dict(obj)), ensure_ascii=False, separators=(",", ":")) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def record_files(path: str | os.PathLike) -> list[Path]:
    """The record files of a report directory (`records*.jsonl`, main file first), or [path] for a file."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob(RECORDS_GLOB), key=lambda p: (p.name != RECORDS_FILE, p.name))
    return [path] if path.exists() else []


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a JSONL file, or of every `records*.jsonl` in a directory, oldest first.

    A truncated last line (a run killed mid-write) is dropped with a warning; a malformed line elsewhere is dropped
    with a warning too; every other line is kept. Records of several files are merged by their ``ts`` (records
    without one keep their place after the previous record of their file).
    """
    keyed: list[tuple[float, int, int, dict]] = []
    for file_index, file in enumerate(record_files(path)):
        data = file.read_bytes().decode("utf-8", errors="replace")
        lines = data.split("\n")
        last_ts = 0.0
        for line_index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                where = "truncated last line" if line_index == len(lines) - 1 else f"malformed line {line_index + 1}"
                warnings.warn(f"{file}: ignoring {where} ({exc}): {line[:80]!r}", stacklevel=2)
                continue
            ts = obj.get("ts")
            if isinstance(ts, (int, float)) and math.isfinite(ts):
                last_ts = max(last_ts, float(ts))
            keyed.append((last_ts, file_index, line_index, obj))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


def _records(records: Iterable[Mapping] | str | os.PathLike) -> list[Mapping]:
    return read_records(records) if isinstance(records, (str, os.PathLike)) else list(records)


def completed_images(records: Iterable[Mapping] | str | os.PathLike, tokenizer: str,
                     metrics: Iterable[str] = ()) -> set[str]:
    """Image ids that already have an image record for `tokenizer` (with every metric in `metrics`, if given).

    `records` is a list of records or a path (file or report directory); a rerun skips these ids to resume.
    """
    needed = set(metrics)
    images = _merge_images(_records(records))
    return {image_id for (tok, image_id), rec in images.items()
            if tok == tokenizer and needed <= {k for k, v in rec["metrics"].items() if v is not None}}


# --------------------------------------------------------------------------------------------------- aggregation


def _merge_images(records: list[Mapping]) -> dict[tuple[str, str], dict]:
    """(tokenizer, image_id) -> merged image record: later records override earlier ones metric by metric."""
    out: dict[tuple[str, str], dict] = {}
    for seq, rec in enumerate(records):
        if rec.get("type") != "image":
            continue
        key = (str(rec["tokenizer"]), str(rec["image_id"]))
        cur = out.setdefault(key, {"tokenizer": key[0], "image_id": key[1], "dataset": None, "resolution": None,
                                   "metrics": {}, "recon": None, "original": None, "seq": {}})
        for field in ("dataset", "resolution", "recon", "original"):
            if rec.get(field) is not None:
                cur[field] = rec[field]
        for name, value in (rec.get("metrics") or {}).items():
            cur["metrics"][name] = value
            cur["seq"][name] = seq
    return out


def _skip_superseded(skip: Mapping, seq: int, images: dict, datasets: dict, timings: dict) -> bool:
    """A skip no longer applies when a later record delivers what was skipped (a rerun that had the weights)."""
    tok, what = skip.get("tokenizer"), str(skip.get("what", ""))
    if tok is None:
        return False
    if what == "tokenizer":
        return any(k[0] == tok and max(v["seq"].values(), default=-1) > seq for k, v in images.items()) \
            or any(k == tok and max(v["seq"].values(), default=-1) > seq for k, v in datasets.items()) \
            or any(k[0] == tok and v["seq"] > seq for k, v in timings.items())
    if what.startswith("metric:"):
        metric = what.split(":", 1)[1]
        return any(k[0] == tok and v["seq"].get(metric, -1) > seq for k, v in images.items()) \
            or (tok in datasets and datasets[tok]["seq"].get(metric, -1) > seq)
    if what == "image" and skip.get("image_id") is not None:
        rec = images.get((tok, str(skip["image_id"])))
        return rec is not None and max(rec["seq"].values(), default=-1) > seq
    return False


def _stats(values: list) -> dict:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    out = {"n": len(finite), "mean": None, "std": None, "min": None, "max": None, "median": None}
    if len(values) != len(finite):
        out["n_nonfinite"] = len(values) - len(finite)
    if finite:
        out.update(mean=statistics.fmean(finite), min=min(finite), max=max(finite), median=statistics.median(finite))
        out["std"] = statistics.stdev(finite) if len(finite) > 1 else None
    return out


def _spec_info(name: str) -> dict | None:
    """What the registry says about a tokenizer (plain data; the registry never builds a model on import)."""
    try:
        from vision_tokenizers.registry import SPECS
    except Exception:  # the report must build from JSONL alone, e.g. on a machine without torch
        return None
    spec = SPECS.get(name)
    if spec is None:
        return None
    return {"family": spec.family, "kind": spec.kind, "resolution": spec.resolution, "num_tokens": spec.num_tokens,
            "codebook_size": spec.codebook_size, "bits_per_token": spec.bits_per_token,
            "bits_per_pixel": spec.bits_per_pixel, "description": spec.description,
            "published": dict(spec.published) if spec.published else None}


def aggregate(records: Iterable[Mapping] | str | os.PathLike) -> dict:
    """Dedupe records and reduce them to per-tokenizer numbers (the content of report.json).

    Returns {"runs", "tokenizers": {name: {...}}, "images": [merged image records], "skips", "conventions"}.
    Every metric that was not computed is absent from "metrics" and has its reason in "missing".
    """
    records = _records(records)
    images = _merge_images(records)
    datasets: dict[str, dict] = {}
    timings: dict[tuple, dict] = {}
    skips: list[tuple[int, Mapping]] = []
    runs: list[Mapping] = []
    order: dict[str, None] = {}
    for seq, rec in enumerate(records):
        kind = rec.get("type")
        if rec.get("tokenizer") is not None and kind in ("image", "dataset", "timing", "skip"):
            order.setdefault(str(rec["tokenizer"]))
        if kind == "run":
            runs.append(dict(rec))
        elif kind == "dataset":
            cur = datasets.setdefault(str(rec["tokenizer"]), {"metrics": {}, "meta": {}, "seq": {}})
            for name, value in (rec.get("metrics") or {}).items():
                cur["metrics"][name] = value
                cur["seq"][name] = seq
            cur["meta"].update(rec.get("meta") or {})
        elif kind == "timing":
            key = (str(rec["tokenizer"]), rec["stage"], rec.get("batch_size"), rec.get("device"))
            timings[key] = {**rec, "seq": seq}
        elif kind == "skip":
            skips.append((seq, rec))
    dedup: dict[tuple, tuple[int, Mapping]] = {}
    for seq, rec in skips:  # the same skip repeated by a rerun is listed once (its latest reason)
        dedup[(rec.get("tokenizer"), rec.get("what"), rec.get("image_id"))] = (seq, rec)
    active = [dict(rec) for seq, rec in sorted(dedup.values(), key=lambda s: s[0])
              if not _skip_superseded(rec, seq, images, datasets, timings)]
    for rec in active:
        rec.pop("ts", None)

    tokenizers = {name: _aggregate_tokenizer(name, images, datasets.get(name), timings, active) for name in order}
    image_rows = sorted(({k: v for k, v in rec.items() if k != "seq"} for rec in images.values()),
                        key=lambda r: (list(order).index(r["tokenizer"]), r["image_id"]))
    return {"generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "runs": [{k: v for k, v in r.items() if k != "ts"} for r in runs],
            "tokenizers": tokenizers, "images": image_rows, "skips": active, "conventions": list(CONVENTIONS)}


def _skip_reason(skips: list[Mapping], tokenizer: str, *whats: str) -> str | None:
    """The reason of the latest skip for `tokenizer` (or for every tokenizer) whose `what` is one of `whats`."""
    for rec in reversed(skips):
        if rec.get("what") in whats and rec.get("tokenizer") in (tokenizer, None):
            return str(rec.get("reason", ""))
    return None


def _aggregate_tokenizer(name: str, images: dict, dataset: dict | None, timings: dict, skips: list) -> dict:
    rows = [rec for (tok, _), rec in images.items() if tok == name]
    tok_skip = _skip_reason([s for s in skips if s.get("tokenizer") == name], name, "tokenizer")
    names = list(dict.fromkeys([*QUALITY, "bpp", *sorted({m for r in rows for m in r["metrics"]})]))
    metrics = {}
    missing = {}
    for metric in names:
        values = [r["metrics"][metric] for r in rows if r["metrics"].get(metric) is not None]
        if values:
            metrics[metric] = _stats(values)
        elif metric != "bpp":
            missing[metric] = tok_skip or _skip_reason(skips, name, f"metric:{metric}")
    dataset_metrics = {k: v for k, v in (dataset or {}).get("metrics", {}).items() if v is not None}
    for metric in ("fid", *TOKEN_STATS):
        if metric not in dataset_metrics:
            missing[metric] = tok_skip or _skip_reason(skips, name, f"metric:{metric}")
    timing = {}
    for stage in STAGES:
        candidates = [t for k, t in timings.items() if k[0] == name and k[1] == stage]
        if not candidates:
            missing[stage] = tok_skip or _skip_reason(skips, name, f"timing:{stage}", "timing", "metric:timing",
                                                      "metric:speed", "speed")
            continue
        t = max(candidates, key=lambda t: t["seq"])  # the latest measurement
        batch = max(int(t.get("batch_size") or 1), 1)
        median, iqr = float(t["median_s"]), float(t.get("iqr_s") or 0.0)
        timing[stage] = {"per_image_s": median / batch, "iqr_per_image_s": iqr / batch,
                         "images_per_s": batch / median if median > 0 else None, "batch_size": batch,
                         "median_s": median, "iqr_s": iqr, "rounds": t.get("rounds"), "device": t.get("device")}
    spec = _spec_info(name)
    resolutions = sorted({int(r["resolution"]) for r in rows if r.get("resolution") is not None})
    bpp = metrics.get("bpp", {}).get("mean")
    if bpp is None:
        bpp = dataset_metrics.get("bpp", spec["bits_per_pixel"] if spec else None)
    return {
        "status": "skipped" if tok_skip and not rows else "ok",
        "skip_reason": tok_skip,
        "n_images": len(rows),
        "datasets": sorted({str(r["dataset"]) for r in rows if r.get("dataset") is not None}),
        "resolution": resolutions[0] if len(resolutions) == 1 else (resolutions or (spec or {}).get("resolution")),
        "metrics": metrics,
        "dataset_metrics": dataset_metrics,
        "dataset_meta": dict((dataset or {}).get("meta", {})),
        "bpp": bpp,
        "timing": timing,
        "missing": {k: v for k, v in missing.items()},
        "spec": spec,
        "published": spec["published"] if spec else None,
    }


# --------------------------------------------------------------------------------------------------- formatting


def _num(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    decimals = METRICS.get(metric, ("", "", 0, 4))[3]
    if metric == "bpp" and abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:,.{decimals}f}" if decimals == 0 else f"{value:.{decimals}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _missing_text(reason: str | None) -> str:
    return f"skipped ({reason})" if reason else "not measured"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds >= 1:
        return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _time_pm(t: dict) -> str:
    median, iqr = t["per_image_s"], t["iqr_per_image_s"]
    unit, scale = ("s", 1) if median >= 1 else ("ms", 1e3) if median >= 1e-3 else ("µs", 1e6)
    digits = max(0, 2 - int(math.floor(math.log10(max(median * scale, 1e-12)))))
    return f"{median * scale:.{digits}f} ± {iqr * scale:.{digits}f} {unit}"


class _Notes:
    """Long skip reasons as numbered notes under a table, so cells stay short: 'skipped (see note 1)'."""

    LIMIT = 60

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}
        self.pending: list[int] = []

    def cell(self, text: str, reason: str | None) -> str:
        if not reason or len(reason) <= self.LIMIT or not text.startswith("skipped ("):
            return _md(text)
        number = self.reasons.setdefault(reason, len(self.reasons) + 1)
        if number not in self.pending:
            self.pending.append(number)
        return f"skipped (see note {number})"

    def flush(self) -> list[str]:
        """The notes referenced since the last flush, as lines to put under the table."""
        by_number = {n: r for r, n in self.reasons.items()}
        lines = [f"- note {n}: {_md(by_number[n])}" for n in sorted(self.pending)]
        self.pending = []
        return [*lines, ""] if lines else []


def metric_cell(tok: dict, metric: str) -> str:
    """'mean ± std' (with n when it differs from the image count), or 'skipped (reason)' / 'not measured'."""
    if metric in tok["metrics"]:
        s = tok["metrics"][metric]
        if s["mean"] is None:
            return f"non-finite ({s.get('n_nonfinite', 0)} images)"
        text = _num(s["mean"], metric) + (f" ± {_num(s['std'], metric)}" if s["std"] is not None else "")
        if s["n"] != tok["n_images"]:
            text += f" (n={s['n']})"
        return text
    if metric in tok["dataset_metrics"]:
        value = tok["dataset_metrics"][metric]
        if metric == "codebook_usage" and 0 <= value <= 1:
            return f"{value * 100:.2f} %"
        text = _num(value, metric)
        if metric == "fid":
            n = tok["dataset_meta"].get("fid_n", tok["dataset_meta"].get("n"))
            text += f" (n={n})" if n is not None else ""
        return text
    return _missing_text(tok["missing"].get(metric))


# --------------------------------------------------------------------------------------------------- writers


def write_csv(report: dict, path: str | os.PathLike) -> Path:
    """benchmark_results.csv: one row per image x tokenizer; a metric that was not computed is an empty cell."""
    rows = report["images"]
    metrics = list(dict.fromkeys([m for m in (*QUALITY, "bpp") if any(m in r["metrics"] for r in rows)]
                                 + sorted({m for r in rows for m in r["metrics"]})))
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tokenizer", "image_id", "dataset", "resolution", *metrics])
        for r in rows:
            values = [r["metrics"].get(m) for m in metrics]
            writer.writerow([r["tokenizer"], r["image_id"], r.get("dataset") or "", r.get("resolution") or "",
                             *("" if v is None else v for v in values)])
    return path


def _best(report: dict, metric: str) -> str | None:
    direction = METRICS.get(metric, ("", "", 0, 0))[2]
    means = {name: t["metrics"].get(metric, {}).get("mean") for name, t in report["tokenizers"].items()}
    if metric == "fid":
        means = {name: t["dataset_metrics"].get("fid") for name, t in report["tokenizers"].items()}
    means = {k: v for k, v in means.items() if v is not None and math.isfinite(v)}
    if direction == 0 or len(means) < 2:
        return None
    return (max if direction > 0 else min)(means, key=means.get)


def _run_lines(report: dict) -> list[str]:
    runs = report["runs"]
    if not runs:
        return ["No run record (records written outside pytest)."]
    run = runs[-1]
    opts, host = run.get("options") or {}, run.get("host") or {}
    sessions = {r.get("session") or r.get("started") for r in runs}
    bits = [f"started {run.get('started', '?')}"]
    for key, label in (("dataset", "dataset"), ("num_images", "images"), ("device", "device"), ("dtype", "dtype"),
                       ("batch_size", "batch size")):
        if opts.get(key) is not None:
            bits.append(f"{label} `{opts[key]}`")
    lines = ["Run: " + " · ".join(bits) + "."]
    host_bits = [f"{k} {host[k]}" for k in ("python", "torch", "cuda", "gpu", "platform", "hostname") if host.get(k)]
    if host_bits:
        lines.append("Host: " + " · ".join(host_bits) + ".")
    if run.get("argv"):
        lines.append("Command: `pytest " + " ".join(map(str, run["argv"])) + "`")
    if len(sessions) > 1:
        lines.append(f"This directory holds records of {len(sessions)} runs; per (tokenizer, image, metric) the "
                     "latest record wins.")
    return lines


def write_markdown(report: dict, path: str | os.PathLike, files: Mapping[str, Path] | None = None,
                   errors: Iterable[str] = ()) -> Path:
    """summary.md: quality, rate and token statistics, speed, published numbers, samples, skips, conventions."""
    path = Path(path)
    files = dict(files or {})
    toks = report["tokenizers"]
    ran = {name: t for name, t in toks.items() if t["status"] != "skipped"}
    notes = _Notes()
    L: list[str] = ["# vtok-bench report", ""]
    for line in _run_lines(report):
        L += [line, ""]
    n_img = sum(t["n_images"] for t in toks.values())
    L += [f"{_plural(len(ran), 'tokenizer')} measured ({len(toks) - len(ran)} skipped), "
          f"{_plural(n_img, 'image reconstruction')}.", ""]
    errors = list(errors)
    if errors:
        L += ["> **Report errors** (the numbers below are complete; these artefacts are not):", ">"]
        L += [f"> - {_md(e)}" for e in errors] + [""]

    L += ["## Reconstruction quality", ""]
    if "summary_png" in files:
        L += [f"![summary]({files['summary_png'].name})", ""]
    extra = sorted({m for t in toks.values() for m in t["metrics"]} - {*QUALITY, "bpp"})
    cols = [*QUALITY, *extra, "fid"]
    head = [METRICS.get(m, (m,))[0] + (f" ({METRICS[m][1]})" if m in METRICS and METRICS[m][1] else "")
            + {1: " ↑", -1: " ↓"}.get(METRICS.get(m, ("", "", 0))[2], "") for m in cols]
    L += ["| Tokenizer | Res. | Images | " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * len(cols)]
    best = {m: _best(report, m) for m in cols}
    for name, t in ran.items():
        cells = []
        for m in cols:
            cell = notes.cell(metric_cell(t, m), t["missing"].get(m))
            cells.append(f"**{cell}**" if best[m] == name else cell)
        res = t["resolution"]
        L.append(f"| `{name}` | {res if res is not None else '–'} | {t['n_images']} | " + " | ".join(cells) + " |")
    L += ["", *notes.flush()]
    for name, t in toks.items():
        if name not in ran:
            L += [f"Not run: `{name}`: {_md(_missing_text(t['skip_reason']))}", ""]
    L += ["Bold: best in column. rFID: (n = number of images in the set).", ""]
    backends: dict[tuple[str, str], list[str]] = {}
    for name, t in ran.items():
        for key, value in t["dataset_meta"].items():
            if key.endswith("_backend") and value:
                backends.setdefault((key[: -len("_backend")], str(value)), []).append(name)
    for (metric, backend), names in backends.items():
        label = METRICS.get(metric, (metric,))[0]
        who = "" if len(names) == len(ran) else " (" + ", ".join(f"`{n}`" for n in names) + ")"
        L += [f"{label} backend{who}: {_md(backend)}", ""]

    L += ["## Rate and token statistics", "",
          "| Tokenizer | Kind | Tokens / image | Codebook | Bits/pixel | Codebook usage | Unique codes "
          "| Entropy (bits) | Perplexity |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, t in ran.items():
        spec = t["spec"] or {}
        cb = spec.get("codebook_size")
        continuous = spec.get("kind") == "continuous"
        cells = [spec.get("kind", "–"), f"{spec['num_tokens']:,}" if spec.get("num_tokens") else "–",
                 f"{cb:,}" if cb else "–", _num(t["bpp"], "bpp"),
                 *("n/a (continuous)" if continuous and m not in t["dataset_metrics"] and not t["missing"].get(m)
                   else notes.cell(metric_cell(t, m), t["missing"].get(m)) for m in TOKEN_STATS)]
        L.append(f"| `{name}` | " + " | ".join(cells) + " |")
    L += ["", *notes.flush(), "Token statistics are over the whole image set (one dataset record per tokenizer).", ""]

    L += ["## Speed", "", "| Tokenizer | Device | Batch | Encode / image | Decode / image | Encode images/s "
          "| Decode images/s | Rounds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, t in ran.items():
        enc, dec = t["timing"].get("encode"), t["timing"].get("decode")
        any_t = enc or dec
        cells = [f"`{any_t['device']}`" if any_t and any_t.get("device") else "–",
                 "/".join(dict.fromkeys(str(x["batch_size"]) for x in (enc, dec) if x)) or "–"]
        for stage, x in (("encode", enc), ("decode", dec)):
            reason = t["missing"].get(stage)
            cells.append(_time_pm(x) if x else notes.cell(_missing_text(reason), reason))
        for x in (enc, dec):
            cells.append(f"{x['images_per_s']:.3g}" if x and x["images_per_s"] else "–")
        cells.append("/".join(dict.fromkeys(str(x["rounds"]) for x in (enc, dec) if x and x.get("rounds"))) or "–")
        L.append(f"| `{name}` | " + " | ".join(cells) + " |")
    L += ["", *notes.flush(), "Per-image time: median ± IQR of one batch divided by the batch size.", ""]

    published = {name: t for name, t in toks.items() if t["published"]}
    if published:
        L += ["## Against the published comparison", "",
              "Published: ldj7672/Vision-Tokenizer-Analysis (COCO val2017, 1000 images). Ours: this run.", "",
              "| Tokenizer | PSNR ours / published | SSIM ours / published | LPIPS ours / published "
              "| rFID ours / published | Decode / image ours / published |", "|---|---|---|---|---|---|"]
        for name, t in published.items():
            pub = t["published"]
            cells = []
            for m in ("psnr", "ssim", "lpips", "fid"):
                ours = t["metrics"].get(m, {}).get("mean") if m != "fid" else t["dataset_metrics"].get("fid")
                ours_s = _num(ours, m) if ours is not None else "–"
                pub_s = _num(pub[m], m) if m in pub else "–"
                delta = f" (Δ {ours - pub[m]:+.{METRICS[m][3]}f})" if ours is not None and m in pub else ""
                cells.append(f"{ours_s} / {pub_s}{delta}")
            dec = t["timing"].get("decode")
            cells.append(f"{fmt_time(dec['per_image_s']) if dec else '–'} / "
                         f"{fmt_time(pub['decode_s']) if 'decode_s' in pub else '–'}")
            L.append(f"| `{name}` | " + " | ".join(cells) + " |")
        L += ["", "Published timings had no warm-up or device sync (their std exceeds the mean); compare with care.",
              ""]

    grids = [(k, p) for k, p in files.items() if k.startswith("grid")]
    L += ["## Sample reconstructions", ""]
    if grids:
        for key, p in grids:
            L += [f"![{key}]({p.name})", ""]
        L += [f"`{grids[0][1].name}`: first row originals, then one row per tokenizer, every cell resized to "
              f"{GRID_CELL} px (LANCZOS down, nearest-neighbour up) with per-image PSNR / LPIPS below it; "
              "`grid_<res>.png` (written when tokenizers differ in resolution) shows each resolution at native "
              "size.", ""]
    sample = _sample_table(report)
    L += sample if sample else ["No reconstructions were saved.", ""]

    L += ["## Skipped", ""]
    if report["skips"]:
        for s in report["skips"]:
            who = f"`{s['tokenizer']}`" if s.get("tokenizer") else "all tokenizers"
            what = s.get("what", "?") + (f" `{s['image_id']}`" if s.get("image_id") is not None else "")
            L.append(f"- {who}, {what}: {_md(s.get('reason', '(no reason given)'))}")
    else:
        L.append("Nothing was skipped.")
    L += ["", "## Files", ""]
    L += [f"- [`{p.name}`]({p.name})" for p in files.values()] + [f"- [`{RECORDS_FILE}`]({RECORDS_FILE}) "
                                                                   "(raw records; `python -m reports DIR` rebuilds "
                                                                   "this report from them)"]
    L += ["", "---", "", "**Conventions.** " + " ".join(CONVENTIONS), ""]
    path.write_text("\n".join(L), encoding="utf-8")
    return path


def _sample_table(report: dict, max_images: int = 5) -> list[str]:
    rows = [r for r in report["images"] if r.get("recon")]
    if not rows:
        return []
    ids = list(dict.fromkeys(r["image_id"] for r in rows))[:max_images]
    by = {(r["tokenizer"], r["image_id"]): r for r in report["images"]}
    originals = {}
    for r in report["images"]:
        if r["image_id"] in ids and r.get("original"):
            originals.setdefault(r["image_id"], r["original"])
    out = ["| Model | " + " | ".join(f"`{i}`" for i in ids) + " |", "|:---:|" + ":---:|" * len(ids)]
    out.append("| **Original** | " + " | ".join(f"![{i}]({originals[i]})" if i in originals else "–" for i in ids)
               + " |")
    for name, t in report["tokenizers"].items():
        cells = [f"![{name} {i}]({by[(name, i)]['recon']})" if (name, i) in by and by[(name, i)].get("recon")
                 else "–" for i in ids]
        if any(c != "–" for c in cells):
            res = f"<br>({t['resolution']} px)" if isinstance(t["resolution"], int) else ""
            out.append(f"| **{name}**{res} | " + " | ".join(cells) + " |")
    return out + [""]


def write_json(report: dict, path: str | os.PathLike, files: Mapping[str, Path] | None = None,
               errors: Iterable[str] = ()) -> Path:
    path = Path(path)
    out = {**report, "files": {k: p.name for k, p in (files or {}).items()}, "errors": list(errors)}
    path.write_text(json.dumps(_jsonable(out), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy / torch scalars become floats, non-finite floats become null (report.json is strict)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):  # numpy / torch scalar
        return _jsonable(obj.item())
    return str(obj)


# --------------------------------------------------------------------------------------------------- plots


def _colors(names: Iterable[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _common_reason(toks: dict, metric: str) -> str | None:
    """The skip reason shared by every tokenizer that ran (None if they differ or there is none)."""
    reasons = {t["missing"].get(metric) for t in toks.values() if t["status"] != "skipped"}
    return reasons.pop() if len(reasons) == 1 else None


def _not_measured(ax, title: str, reason: str | None) -> None:
    import textwrap

    text = f"{title}\n" + ("skipped: " + textwrap.shorten(reason, 140, placeholder=" …") if reason
                          else "not measured")
    text = "\n".join(textwrap.fill(line, 52) for line in text.split("\n"))
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.45",
            style="italic", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_color("0.85")


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)


def _bar_panel(ax, report: dict, metric: str, title: str, colors: dict, labels: bool) -> bool:
    """Horizontal bars of one metric per tokenizer (± std, published markers); False when nothing to draw."""
    toks = report["tokenizers"]
    names = list(toks)
    if metric == "fid":
        values = {n: toks[n]["dataset_metrics"].get("fid") for n in names}
        errs = {n: None for n in names}
    else:
        values = {n: toks[n]["metrics"].get(metric, {}).get("mean") for n in names}
        errs = {n: toks[n]["metrics"].get(metric, {}).get("std") for n in names}
    published = {n: (toks[n]["published"] or {}).get(metric) for n in names}
    if not any(v is not None for v in values.values()):
        _not_measured(ax, title, _common_reason(toks, metric))
        return False
    y = range(len(names))
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    top = max([*finite, *(v + (errs[n] or 0) for n, v in values.items() if v is not None and math.isfinite(v)),
               *(p for p in published.values() if p is not None)], default=1.0)
    for i, n in enumerate(names):
        v = values[n]
        if v is None or not math.isfinite(v):
            reason = toks[n]["missing"].get(metric)
            ax.text(0.01 * top, i, "skipped" if reason else "not measured", va="center", fontsize=8.5,
                    color="0.45", style="italic")
            continue
        ax.barh(i, v, xerr=errs[n], color=colors[n], height=0.62, capsize=3,
                error_kw={"elinewidth": 1, "ecolor": "0.25"})
        ax.text(v + (errs[n] or 0) + 0.015 * top, i, _num(v, metric), va="center", fontsize=8.5, zorder=6,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.6})
    pub = [(i, published[n]) for i, n in enumerate(names) if published[n] is not None]
    if pub:
        ax.scatter([p for _, p in pub], [i for i, _ in pub], marker="D", s=28, color="black", zorder=5,
                   label="published")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.1,
                  handletextpad=0.2)
    ax.set_yticks(list(y), [n for n in names] if labels else [""] * len(names), fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.22)
    ax.set_title(title, fontsize=11, fontweight="bold", loc="left")
    _style(ax)
    return True


def _rate_panel(ax, report: dict, colors: dict) -> None:
    toks = report["tokenizers"]
    pts = [(n, t["bpp"], t["metrics"]["psnr"]["mean"], t["metrics"]["psnr"]["std"]) for n, t in toks.items()
           if t["bpp"] and "psnr" in t["metrics"] and t["metrics"]["psnr"]["mean"] is not None]
    if not pts:
        _not_measured(ax, "PSNR vs. bits per pixel", _common_reason(toks, "psnr"))
        return
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ys = [p[2] for p in pts]
    span = (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for n, x, y, e in sorted(pts, key=lambda p: -p[2]):
        ax.errorbar(x, y, yerr=e, fmt="o", color=colors[n], ms=8, capsize=3, elinewidth=1, mec="white", mew=0.8)
        label_y = y
        while any(abs(label_y - py) < 0.06 * span and abs(math.log10(x / px)) < 0.35 for px, py in placed):
            label_y -= 0.06 * span  # nudge down past labels it would overlap
        placed.append((x, label_y))
        ax.annotate(n, (x, y), xytext=(x * 1.13, label_y), textcoords="data", fontsize=8, color="0.2", va="center",
                    ha="left", xycoords="data", annotation_clip=False,
                    **({"arrowprops": {"arrowstyle": "-", "color": "0.6", "lw": 0.6}} if label_y != y else {}))
    ax.set_xscale("log")
    xs = [p[1] for p in pts]
    ax.set_xlim(min(xs) / 2.5, max(xs) * 4)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per pixel (log scale)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Quality vs. rate  (↖ better)", fontsize=11, fontweight="bold", loc="left")
    ax.grid(color="0.9", linewidth=0.8, which="both")
    ax.spines[["top", "right"]].set_visible(False)


def _time_panel(ax, report: dict, labels: bool) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    toks = report["tokenizers"]
    names = list(toks)
    if not any(t["timing"] for t in toks.values()):
        _not_measured(ax, "Encode / decode time", _common_reason(toks, "encode"))
        return
    h = 0.38
    stage_colors = {"encode": "#4C72B0", "decode": "#DD8452"}
    values = [t["timing"][s]["per_image_s"] for t in toks.values() for s in STAGES if s in t["timing"]]
    lo, hi = min(values), max(values)
    for i, n in enumerate(names):
        for j, stage in enumerate(STAGES):
            y = i + (j - 0.5) * h
            t = toks[n]["timing"].get(stage)
            if not t:
                text = "skipped" if toks[n]["missing"].get(stage) else "not measured"
                ax.text(lo / 2.5, y, text, va="center", fontsize=7.5, color="0.45", style="italic")
                continue
            v, iqr = t["per_image_s"], t["iqr_per_image_s"]
            ax.barh(y, v, height=h * 0.92, color=stage_colors[stage], label=stage,
                    xerr=[[min(iqr / 2, v * 0.99)], [iqr / 2]], capsize=2,
                    error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
            ax.text(v * 1.25 + iqr / 2, y, fmt_time(v), va="center", fontsize=7.5)
    ax.set_xscale("log")
    ax.set_xlim(lo / 3, hi * 12)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_time(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow span would otherwise label every minor tick
    ax.set_yticks(range(len(names)), names if labels else [""] * len(names), fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
              ncols=2, borderaxespad=0.1)
    ax.set_xlabel("time per image, median ± IQR (log scale)")
    ax.set_title("Time per image  ↓", fontsize=11, fontweight="bold", loc="left")
    _style(ax)


def plot_summary(report: dict, path: str | os.PathLike) -> Path:
    """summary.png: PSNR / SSIM / LPIPS bars (± std, published markers), quality vs. bpp, rFID, timings."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    toks = report["tokenizers"]
    names = list(toks)
    colors = _colors(names)
    height = 7.2 + 0.32 * max(len(names) - 4, 0) * 2
    fig = Figure(figsize=(17, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3, gridspec_kw={"width_ratios": [1.35, 1, 1]})
    if not names:
        for ax in axes.flat:
            _not_measured(ax, "no results", None)
    else:
        # bar panels of a row share the tokenizer order; the first drawn one of each row carries the names
        labeled = False
        for ax, metric, title in ((axes[0, 0], "psnr", "PSNR (dB)  ↑"), (axes[0, 1], "ssim", "SSIM  ↑"),
                                  (axes[0, 2], "lpips", "LPIPS (AlexNet)  ↓")):
            labeled |= _bar_panel(ax, report, metric, title, colors, labels=not labeled)
        labeled = _bar_panel(axes[1, 0], report, "fid", "rFID  ↓" + _fid_note(report), colors, labels=True)
        _time_panel(axes[1, 1], report, labels=not labeled)
        _rate_panel(axes[1, 2], report, colors)
    run = report["runs"][-1] if report["runs"] else {}
    opts = run.get("options") or {}
    n_images = max((t["n_images"] for t in toks.values()), default=0)
    sub = [f"{n_images} images" + (f" ({opts['dataset']})" if opts.get("dataset") else "")]
    sub += [f"device {opts['device']}"] if opts.get("device") else []
    sub += [str(run["started"])[:16].replace("T", " ")] if run.get("started") else []
    fig.suptitle("vtok-bench: image tokenizer reconstruction benchmark   ·   " + "  ·  ".join(sub),
                 fontsize=14, fontweight="bold")
    published = any(t["published"] for t in toks.values())
    fig.text(0.5, -0.005, "Bars: mean over images ± std"
             + ("; ◆ published numbers (ldj7672/Vision-Tokenizer-Analysis)" if published else "")
             + ". Metrics on 8-bit images at each tokenizer's resolution; PSNR = mean of per-image PSNR.",
             ha="center", va="top", fontsize=8.5, color="0.35")
    path = Path(path)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return path


def _fid_note(report: dict) -> str:
    metas = [t["dataset_meta"] for t in report["tokenizers"].values() if "fid" in t["dataset_metrics"]]
    ns = {m.get("fid_n", m.get("n")) for m in metas if m.get("fid_n", m.get("n")) is not None}
    return f"   (n={ns.pop()})" if len(ns) == 1 else ""


# --------------------------------------------------------------------------------------------------- grids


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    except Exception:
        return ImageFont.load_default(size)


def _fit(img, cell: int):
    from PIL import Image

    img = img.convert("RGB")
    if img.size == (cell, cell):
        return img
    scale = cell / max(img.size)
    # upscaling: nearest neighbour shows the tokenizer's pixels as they are; downscaling: LANCZOS
    resample = Image.NEAREST if scale > 1 else Image.LANCZOS
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    canvas = Image.new("RGB", (cell, cell), (235, 235, 235))
    canvas.paste(img, ((cell - img.width) // 2, (cell - img.height) // 2))
    return canvas


def _grid_selection(report: dict, report_dir: Path, max_images: int, resolution: int | None):
    """Tokenizers (rows) and image ids (columns) with reconstructions on disk, at `resolution` if given."""
    rows = [r for r in report["images"] if r.get("recon") and (report_dir / r["recon"]).is_file()
            and (resolution is None or r.get("resolution") == resolution)]
    toks = list(dict.fromkeys(r["tokenizer"] for r in rows))
    have: dict[str, set] = {}
    for r in rows:
        have.setdefault(r["image_id"], set()).add(r["tokenizer"])
    ids = list(dict.fromkeys(r["image_id"] for r in rows))
    ids.sort(key=lambda i: -len(have[i]))  # stable: complete columns first, then in recording order
    return toks, ids[:max_images]


def _original_for(report: dict, report_dir: Path, image_id: str, resolution: int | None):
    cands = [r for r in report["images"] if r["image_id"] == image_id and r.get("original")
             and (report_dir / r["original"]).is_file()]
    exact = [r for r in cands if resolution is not None and r.get("resolution") == resolution]
    pick = exact or sorted(cands, key=lambda r: -(r.get("resolution") or 0))
    return report_dir / pick[0]["original"] if pick else None


def make_grid(report: dict, report_dir: str | os.PathLike, path: str | os.PathLike, *,
              resolution: int | None = None, max_images: int = GRID_IMAGES, cell: int | None = None) -> Path | None:
    """A reconstruction grid: a header of image ids, the originals, then one row per tokenizer.

    With `resolution`, only tokenizers at that resolution, at native size (cell = resolution, at most 512);
    without, every tokenizer with every cell resized to `cell` (default 256 px; LANCZOS down, nearest up) so rows align.
    Each reconstruction is captioned with its PSNR / LPIPS. Returns None when no reconstruction was saved.
    """
    from PIL import Image, ImageDraw

    report_dir = Path(report_dir)
    toks, ids = _grid_selection(report, report_dir, max_images, resolution)
    if not toks or not ids:
        return None
    cell = cell or (min(resolution, 512) if resolution else GRID_CELL)
    by = {(r["tokenizer"], r["image_id"]): r for r in report["images"]}
    label_w, head_h, cap_h, pad = max(230, cell * 3 // 4), 34, 22, 6
    row_h = cell + cap_h + pad
    width = label_w + len(ids) * (cell + pad) + pad
    height = head_h + (1 + len(toks)) * row_h + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    f_head, f_label, f_small, f_cap = _font(15, True), _font(16, True), _font(13), _font(12)

    def x_of(j: int) -> int:
        return label_w + pad + j * (cell + pad)

    for j, image_id in enumerate(ids):
        draw.text((x_of(j) + cell // 2, head_h // 2), _shorten(draw, image_id, f_head, cell), font=f_head,
                  fill=(40, 40, 40), anchor="mm")
    res_set = {report["tokenizers"][t]["resolution"] for t in toks}
    common = resolution or (res_set.pop() if len(res_set) == 1 else None)
    rows = [("Original", f"{common} px" if isinstance(common, int) else "largest saved crop", None), *(
        (name, _row_sub(report["tokenizers"][name]), name) for name in toks)]
    for i, (title, sub, tok) in enumerate(rows):
        y = head_h + i * row_h
        if i % 2:
            draw.rectangle([0, y - pad // 2, width, y + row_h - pad // 2], fill=(246, 247, 249))
        draw.text((12, y + cell // 2 - 12), _shorten(draw, title, f_label, label_w - 20), font=f_label,
                  fill=(20, 20, 20), anchor="lm")
        draw.text((12, y + cell // 2 + 12), sub, font=f_small, fill=(100, 100, 100), anchor="lm")
        for j, image_id in enumerate(ids):
            x = x_of(j)
            if tok is None:
                src = _original_for(report, report_dir, image_id, resolution)
                caption = ""
            else:
                rec = by.get((tok, image_id))
                src = report_dir / rec["recon"] if rec and rec.get("recon") else None
                m = rec["metrics"] if rec else {}
                caption = "  ·  ".join(x for x in (f"{m['psnr']:.2f} dB" if m.get("psnr") is not None else "",
                                                   f"LPIPS {m['lpips']:.3f}" if m.get("lpips") is not None else "")
                                       if x)
            if src is not None and src.is_file():
                with Image.open(src) as im:
                    canvas.paste(_fit(im, cell), (x, y))
            else:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(225, 225, 225))
                draw.text((x + cell // 2, y + cell // 2), "missing", font=f_small, fill=(120, 120, 120),
                          anchor="mm")
            if caption:
                draw.text((x + cell // 2, y + cell + cap_h // 2), caption, font=f_cap, fill=(60, 60, 60),
                          anchor="mm")
    path = Path(path)
    canvas.save(path, compress_level=6)
    return path


def _row_sub(tok: dict) -> str:
    spec = tok.get("spec") or {}
    res = tok["resolution"]
    bits = [f"{res} px" if isinstance(res, int) else None,
            f"{spec['num_tokens']:,} tokens" if spec.get("num_tokens") else None]
    return " · ".join(b for b in bits if b) or ""


def _shorten(draw, text: str, font, width: int) -> str:
    text = str(text)
    while len(text) > 4 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if not text.endswith("…") else text[:-2] + "…"
    return text


# --------------------------------------------------------------------------------------------------- entry point


def build_report(report_dir: str | os.PathLike, *, max_images: int = GRID_IMAGES) -> dict[str, Path]:
    """Rebuild every artefact of `report_dir` from its `records*.jsonl`; returns {name: path} of what was written.

    The CSV and report.json are written first. A failing plot or grid does not stop the rest: its error is
    warned about and listed in summary.md and report.json (``errors``), never silently dropped.
    """
    report_dir = Path(report_dir)
    if not record_files(report_dir):
        raise FileNotFoundError(f"no {RECORDS_GLOB} in {report_dir}")
    report = aggregate(read_records(report_dir))
    files: dict[str, Path] = {"csv": write_csv(report, report_dir / "benchmark_results.csv")}
    errors: list[str] = []

    def attempt(key: str, fn, *args, **kwargs) -> None:
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in summary.md / report.json and warned
            errors.append(f"{key}: {type(exc).__name__}: {exc}")
            warnings.warn(f"vtok report: {key} failed: {exc!r}", stacklevel=2)
            return
        if out is not None:
            files[key] = out

    attempt("summary_png", plot_summary, report, report_dir / "summary.png")
    attempt("grid", make_grid, report, report_dir, report_dir / "grid.png", max_images=max_images)
    resolutions = sorted({r["resolution"] for r in report["images"] if r.get("recon") and r.get("resolution")})
    if len(resolutions) > 1:
        for res in resolutions:
            attempt(f"grid_{res}", make_grid, report, report_dir, report_dir / f"grid_{res}.png", resolution=res,
                    max_images=max_images)
    files["json"] = report_dir / "report.json"
    files["markdown"] = report_dir / "summary.md"
    write_json(report, files["json"], files, errors)
    write_markdown(report, files["markdown"], {k: v for k, v in files.items() if k != "markdown"}, errors)
    return files
