"""The append-only JSONL record store: write, list and read record files, merge image records, resume."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vision_tokenizers.results.constants import RECORDS_FILE, RECORDS_GLOB


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


_INFINITIES = {"inf": math.inf, "-inf": -math.inf}


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a JSONL file, or of every `records*.jsonl` in a directory, oldest first.

    A truncated last line (a run killed mid-write) is dropped with a warning; a malformed line elsewhere is dropped
    with a warning too; every other line is kept. Records of several files are merged by their ``ts`` (records
    without one keep their place after the previous record of their file).
    """
    records, problems = read_records_checked(path)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    return records


def read_records_checked(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """`read_records` that returns the dropped lines' descriptions (one line each) instead of warning them."""
    problems: list[str] = []
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
                problems.append(f"{file}: ignoring {where} ({exc}): {line[:80]!r}")
                continue
            if isinstance(obj.get("metrics"), dict):
                obj["metrics"] = {k: _INFINITIES.get(v, v) if isinstance(v, str) else v
                                  for k, v in obj["metrics"].items()}
            ts = obj.get("ts")
            if isinstance(ts, (int, float)) and math.isfinite(ts):
                last_ts = max(last_ts, float(ts))
            keyed.append((last_ts, file_index, line_index, obj))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed], problems


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


def recorded_evaluation(records: Iterable[Mapping] | str | os.PathLike, tokenizer: str, *, dataset: str,
                        resolution: int, ids: list[str], image_metrics: Iterable[str],
                        dataset_metrics: Iterable[str],
                        settings: Mapping[str, Any] | None = None) -> tuple[dict[str, dict], dict] | None:
    """The complete evaluation already stored for exactly these images, or None if anything is missing.

    Returns ({image id: metrics}, dataset record). Complete means: every id has an image record (same dataset and
    resolution) with every one of `image_metrics`, and a dataset record for the same dataset, resolution and image
    count carries every one of `dataset_metrics`, made with the same generation `settings` when given. A rerun into
    the same report dir then reconstructs nothing.
    """
    records = _records(records) if not isinstance(records, (str, os.PathLike)) or Path(records).exists() else []
    images: dict[str, dict] = {}
    found = None
    for rec in records:
        if rec.get("tokenizer") != tokenizer:
            continue
        if rec.get("type") == "image" and rec.get("dataset") == dataset and rec.get("resolution") == resolution:
            images.setdefault(rec["image_id"], {}).update(rec.get("metrics") or {})
        meta = rec.get("meta") or {}
        if rec.get("type") == "dataset" and (meta.get("dataset"), meta.get("resolution"), meta.get("n")) == (
                dataset, resolution, len(ids)) and (settings is None or _jsonable(meta.get("settings") or {}) ==
                                                    _jsonable(dict(settings))):
            found = rec
    image_metrics, dataset_metrics = list(image_metrics), list(dataset_metrics)
    if found is None or any(i not in images or any(images[i].get(m) is None for m in image_metrics) for i in ids):
        return None
    if any((found.get("metrics") or {}).get(m) is None for m in dataset_metrics):
        return None
    return {i: images[i] for i in ids}, found


def resumable_images(report_dir: str | os.PathLike, tokenizer: str, *, ids: Iterable[str], protocol: str | None,
                     config: str | None, resolution: int, image_metrics: Iterable[str],
                     stats: Iterable[str] = ()) -> dict[str, dict]:
    """{image id: merged image record} of the `ids` already measured in `report_dir` exactly as this run would.

    Same protocol id, tokenizer config id and resolution, every one of `image_metrics`, and, when `stats` names
    per-image statistics (Inception features, ids), a readable statistics file holding them. A resumed run
    computes only the other images; a torn last line of a killed run is simply not a record.
    """
    from vision_tokenizers.results.stats import readable_stats

    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return {}
    records, _ = read_records_checked(report_dir)
    merged = _merge_images(records)
    needed_metrics, needed_stats, out = list(image_metrics), set(stats), {}
    for image_id in ids:
        row = merged.get((tokenizer, str(image_id)))
        if row is None or (row["protocol"], row["config"], row["resolution"]) != (protocol, config, resolution):
            continue
        if any(row["metrics"].get(m) is None for m in needed_metrics):
            continue
        if needed_stats and not (row["stats"] and readable_stats(report_dir / row["stats"], needed_stats)):
            continue
        out[str(image_id)] = row
    return out


def seeded_images(report_dir: str | os.PathLike, tokenizer: str, run_seed: int, *, protocol: str | None,
                  config: str | None) -> set[str]:
    """Image ids with a ``seed_image`` record (an extra decode of `--seeds K`) for `run_seed` under this protocol and
    tokenizer config: a resumed run decodes only the others."""
    if not Path(report_dir).is_dir():
        return set()
    records, _ = read_records_checked(report_dir)
    return {str(r["image_id"]) for r in records if r.get("type") == "seed_image" and r.get("tokenizer") == tokenizer
            and r.get("run_seed") == run_seed and (r.get("protocol"), r.get("config")) == (protocol, config)}


def _merge_images(records: list[Mapping]) -> dict[tuple[str, str], dict]:
    """(tokenizer, image_id) -> merged image record: later records override earlier ones metric by metric."""
    out: dict[tuple[str, str], dict] = {}
    for seq, rec in enumerate(records):
        if rec.get("type") != "image":
            continue
        key = (str(rec["tokenizer"]), str(rec["image_id"]))
        cur = out.get(key)
        origin = (rec.get("protocol"), rec.get("config"))
        if cur is not None and any(origin) and origin != (cur["protocol"], cur["config"]):
            cur = None  # measured again under another protocol or tokenizer config: the new row replaces the old
        if cur is None:
            cur = out[key] = {"tokenizer": key[0], "image_id": key[1], "dataset": None, "resolution": None,
                              "metrics": {}, "recon": None, "original": None, "protocol": None, "config": None,
                              "stats": None, "text": None, "seq": {}}
        for field in ("dataset", "resolution", "recon", "original", "protocol", "config", "stats", "text"):
            if rec.get(field) is not None:
                cur[field] = rec[field]
        for name, value in (rec.get("metrics") or {}).items():
            cur["metrics"][name] = value
            cur["seq"][name] = seq
    return out


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy / torch scalars become floats, ±inf the strings "inf" / "-inf" (read back as floats by
    `read_records`), NaN null (report.json is strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):  # a perfect copy's PSNR is +inf: kept as a counted value ("inf"), NaN as null
        return obj if math.isfinite(obj) else (None if math.isnan(obj) else ("inf" if obj > 0 else "-inf"))
    if hasattr(obj, "item"):  # numpy / torch scalar
        return _jsonable(obj.item())
    return str(obj)
