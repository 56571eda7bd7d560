"""Merge report directories (shards of one dataset, or parts of one run) into one report, exactly.

The merged directory holds what a single run writes: every source's records (their dataset records excepted), the
PNGs and the per-image statistics; each tokenizer's dataset metrics are then reduced again from the per-image
statistics of all its images (`stats.reduce_stored_statistics`, sorted ids) - never an average of per-shard numbers.

Within one source, the latest record of a (tokenizer, image) wins (a resumed run). Across sources nothing is dropped
silently: two sources holding different rows for the same (tokenizer, image) are a `MergeConflict` naming the
tokenizer, the number of images and the fields that differ, unless `prefer` says which source's rows to keep; the
rows dropped that way are counted in the merged report and their records kept in ``merge_dropped.jsonl``. Rows that
are the same in several sources (protocol, tokenizer config, dataset, resolution and every value) are merged and
counted.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vision_tokenizers.results.constants import GRID_IMAGES, RECORDS_FILE
from vision_tokenizers.results.protocol import (
    MixedProtocols,
    _tokenizer_configs,
    mixing_problems,
    protocol_diff,
    protocols_in,
)
from vision_tokenizers.results.stats import reduce_stored_statistics
from vision_tokenizers.results.store import _merge_images, append_record, read_records_checked, record_files
from vision_tokenizers.results.text import text_dataset_metrics

COPIED = ("originals", "recon", "stats")
PREFER = ("first", "last")
DROPPED_FILE = "merge_dropped.jsonl"  # not records*.jsonl: never read back into the merged report
ROW_TYPES = ("image", "seed_image")  # the records that make up one (tokenizer, image) row of a source

Key = tuple[str, str]


class MergeConflict(ValueError):
    """Several merge sources hold different rows for the same (tokenizer, image); the message names the tokenizer,
    the number of images and the fields that differ."""


@dataclass
class _Source:
    path: Path
    records: list[dict]  # every record but the dataset records (those are reduced again)
    datasets: list[dict]
    rows: dict[Key, dict]  # (tokenizer, image id) -> this source's row (latest record wins within the source)


@dataclass
class _Resolution:
    """Which source's row each (tokenizer, image) keeps, and what the others were."""

    winner: dict[Key, int]
    dropped: dict[tuple[str, int, int, tuple[str, ...]], list[Key]]  # (tokenizer, loser, winner, differences)
    duplicates: dict[str, int]  # tokenizer -> rows held identically by more than one source, merged into one
    lost: set[tuple[Key, int]]  # (key, source index) of the rows dropped


def _shard_problems(runs: list[Mapping]) -> list[str]:
    shards = [str((r.get("options") or {}).get("shard") or "") for r in runs]
    named = sorted({s for s in shards if s})
    if not named:
        return []
    counts = {s.split("/")[-1] for s in named}
    if len(counts) > 1 or len(named) != len(set(shards)):
        return [f"the sources mix shard layouts: {', '.join(sorted(set(shards)) or ['(none)'])}"]
    total = int(counts.pop())
    missing = sorted(set(range(1, total + 1)) - {int(s.split("/")[0]) for s in named})
    return [f"shard(s) {', '.join(f'{i}/{total}' for i in missing)} missing: the merged report covers part of "
            "the dataset"] if missing else []


def row_differences(a: Mapping, b: Mapping, protocols: Mapping[str, Mapping],
                    configs: Mapping[str, Mapping]) -> list[str]:
    """What differs between two rows of one (tokenizer, image), as 'field: A vs B' lines: protocol fields (dtype,
    device, libraries...), tokenizer config fields (settings, checkpoints, seed), dataset / resolution, else the
    metrics whose values differ. [] when the rows are the same."""
    out: list[str] = []
    if a["protocol"] != b["protocol"]:
        both = a["protocol"] in protocols and b["protocol"] in protocols
        out += (protocol_diff(protocols[a["protocol"]], protocols[b["protocol"]]) if both else []) or [
            f"protocol: {a['protocol']!r} vs {b['protocol']!r}"]
    if a["config"] != b["config"]:
        both = a["config"] in configs and b["config"] in configs
        out += [f"config {line}" for line in (protocol_diff(configs[a["config"]], configs[b["config"]])
                                              if both else [])] or [f"config: {a['config']!r} vs {b['config']!r}"]
    out += [f"{field}: {a[field]!r} vs {b[field]!r}" for field in ("dataset", "resolution") if a[field] != b[field]]
    if not out:
        names = sorted(set(a["metrics"]) | set(b["metrics"]))
        values = [m for m in names if a["metrics"].get(m, "absent") != b["metrics"].get(m, "absent")]
        if values:
            out.append("same protocol and config, different values of " + ", ".join(values))
    return out


def _read_source(path: Path) -> tuple[_Source, list[str]]:
    if not record_files(path):
        raise FileNotFoundError(f"no records*.jsonl in {path}")
    found, dropped = read_records_checked(path)
    records = [r for r in found if r.get("type") != "dataset"]
    datasets = [r for r in found if r.get("type") == "dataset"]  # their backends and settings are kept
    return _Source(path, records, datasets, _merge_images(records)), dropped


def _resolve(sources: list[_Source], prefer: str | None, protocols: Mapping, configs: Mapping) -> _Resolution:
    """Pick each (tokenizer, image)'s row: the only one, or among several sources the last (`prefer` "last" or
    None) or the first. Rows equal to the pick are duplicates; the others are dropped, grouped by what differs."""
    holders: dict[Key, list[int]] = {}
    for index, source in enumerate(sources):
        for key in source.rows:
            holders.setdefault(key, []).append(index)
    res = _Resolution({}, {}, {}, set())
    for key, indices in holders.items():
        win = indices[0] if prefer == "first" else indices[-1]
        res.winner[key] = win
        for other in indices:
            if other == win:
                continue
            diff = row_differences(sources[other].rows[key], sources[win].rows[key], protocols, configs)
            if diff:
                res.dropped.setdefault((key[0], other, win, tuple(diff)), []).append(key)
                res.lost.add((key, other))
            else:
                res.duplicates[key[0]] = res.duplicates.get(key[0], 0) + 1
    return res


def _conflict_message(sources: list[_Source], res: _Resolution) -> str:
    lines = []
    for (tokenizer, a, b, diff), keys in res.dropped.items():
        first, last = sorted((a, b))
        lines.append(f"  tokenizer {tokenizer}: {len(keys)} image(s) measured in both {sources[first].path} and "
                     f"{sources[last].path}, differing in: " + "; ".join(diff))
    return ("refusing to merge: several sources hold rows for the same (tokenizer, image), and keeping one would "
            "drop the other (pass --prefer first or --prefer last to keep one source's rows on purpose; the dropped "
            "rows are counted in the merged report):\n" + "\n".join(lines))


def _resolution_notes(sources: list[_Source], res: _Resolution, prefer: str | None) -> tuple[list[str], list[dict]]:
    notes, dropped = [], []
    for (tokenizer, loser, win, diff), keys in res.dropped.items():
        dropped.append({"tokenizer": tokenizer, "rows": len(keys), "from": str(sources[loser].path),
                        "kept_from": str(sources[win].path), "differences": list(diff)})
        notes.append(f"--prefer {prefer}: {len(keys)} row(s) of {tokenizer} from {sources[loser].path} dropped, those "
                     f"of {sources[win].path} kept (differing in: {'; '.join(diff)}); the dropped records are in "
                     f"{DROPPED_FILE}")
    for tokenizer, count in res.duplicates.items():
        notes.append(f"{count} row(s) of {tokenizer} held identically by several sources (same protocol, config and "
                     "values) merged, each counted once")
    return notes, dropped


def merge_reports(sources: list[str | os.PathLike], out: str | os.PathLike, *, allow_mixed: bool = False,
                  prefer: str | None = None, max_images: int = GRID_IMAGES) -> dict[str, Path]:
    """Merge the report directories `sources` into `out` (created; must hold no records yet) and build its report.

    Raises MergeConflict when two sources hold different rows for the same (tokenizer, image), unless `prefer`
    ("first" or "last": which source's row to keep; the number of rows dropped is written into the report).
    Raises MixedProtocols (naming the differing fields) when the rows of the merged report were measured under
    different protocols or tokenizer configs, unless `allow_mixed`: every source's rows are checked (each source after
    its own latest-wins), not only those left by a global latest-wins; rows dropped on purpose with `prefer` are not
    in the report, so they do not count. Missing shards are warned about and listed in the report.
    """
    from vision_tokenizers.results.report import build_report

    if prefer not in (None, *PREFER):
        raise ValueError(f"prefer must be one of {PREFER} or None, not {prefer!r}")
    out = Path(out)
    if record_files(out):
        raise FileExistsError(f"--out {out} already holds records; merge into a new directory")
    read = [_read_source(Path(s)) for s in sources]
    srcs = [source for source, _ in read]
    problems = [line for _, dropped in read for line in dropped]
    everything = [r for s in srcs for r in s.records]
    res = _resolve(srcs, prefer, protocols_in(everything), _tokenizer_configs(everything))
    if res.dropped and prefer is None:
        raise MergeConflict(_conflict_message(srcs, res))
    records, set_aside, kept_rows = [], [], []
    for index, source in enumerate(srcs):
        kept_rows += [row for key, row in source.rows.items() if res.winner[key] == index]
        for rec in source.records:
            key = (str(rec.get("tokenizer")), str(rec.get("image_id")))
            if rec.get("type") not in ROW_TYPES or res.winner.get(key, index) == index:
                records.append(rec)
            elif (key, index) in res.lost:
                set_aside.append({**rec, "merge_source": str(source.path)})
            # else: the same row as the kept one (an identical duplicate): its records add nothing
    lines = mixing_problems(records, rows=kept_rows)
    if lines and not allow_mixed:
        raise MixedProtocols("refusing to merge rows measured under different protocols (pass --allow-mixed to merge "
                             "anyway):\n" + "\n".join(f"  {line}" for line in lines))
    notes, dropped = _resolution_notes(srcs, res, prefer)
    notes = _shard_problems([r for r in records if r.get("type") == "run"]) + notes
    for note in notes + problems:
        warnings.warn(note, stacklevel=2)
    out.mkdir(parents=True, exist_ok=True)
    for source in reversed(srcs) if prefer == "first" else srcs:  # the kept row's PNGs and statistics are copied last
        for sub in COPIED:
            if (source.path / sub).is_dir():
                shutil.copytree(source.path / sub, out / sub, dirs_exist_ok=True)
    target = out / RECORDS_FILE
    for rec in records:
        append_record(target, rec)
    for rec in set_aside:
        append_record(out / DROPPED_FILE, rec)
    append_record(target, {"type": "merge", "sources": [str(s.path) for s in srcs], "prefer": prefer,
                           "rows_dropped": sum(d["rows"] for d in dropped), "dropped": dropped,
                           "duplicates_merged": sum(res.duplicates.values()), "notes": notes + problems,
                           "mixed": lines})
    for rec in merged_dataset_records(out, records + [r for s in srcs for r in s.datasets]):
        append_record(target, rec)
    return build_report(out, max_images=max_images, allow_mixed=allow_mixed)


def merged_dataset_records(report_dir: Path, records: list[Mapping]) -> list[dict]:
    """One dataset record per tokenizer, reduced from the per-image statistics of all its (latest) image rows, with
    the backends, settings and dataset of the sources' dataset records."""
    rows: dict[str, list[dict]] = {}
    for row in _merge_images(records).values():
        rows.setdefault(row["tokenizer"], []).append(row)
    source_meta: dict[str, dict] = {}
    for rec in records:
        if rec.get("type") == "dataset":
            source_meta.setdefault(str(rec["tokenizer"]), {}).update(rec.get("meta") or {})
    out = []
    for name, tok_rows in rows.items():
        tok_rows.sort(key=lambda r: r["image_id"])
        resolution = tok_rows[0].get("resolution")
        stats = {r["image_id"]: r["stats"] for r in tok_rows if r.get("stats")}
        metrics, meta = reduce_stored_statistics(report_dir, stats,
                                                 pixels_per_image=resolution**2 if resolution else None)
        bpp = tok_rows[0]["metrics"].get("bpp")
        if bpp is not None:
            metrics = {"bpp": bpp, **metrics}
        metrics.update(text_dataset_metrics(tok_rows, resolution))  # OCR text fidelity: means over every box
        kept = {k: v for k, v in source_meta.get(name, {}).items() if k == "settings" or (
            k.endswith(("_backend", "_mode")) and ("fid" in metrics or not k.startswith(("fid", "kid"))))}
        protocol = {r["protocol"] for r in tok_rows} - {None}
        config = {r["config"] for r in tok_rows} - {None}
        rec = {"type": "dataset", "tokenizer": name, "metrics": metrics,
               "meta": {**meta, **kept, "n": len(tok_rows), "dataset": tok_rows[0].get("dataset"),
                        "resolution": resolution}}
        if len(protocol) == 1:
            rec["protocol"] = protocol.pop()
        if len(config) == 1:
            rec["config"] = config.pop()
        out.append(rec)
    return out
