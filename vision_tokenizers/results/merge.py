"""Merge report directories (shards of one dataset, or parts of one run) into one report, exactly.

The merged directory holds what a single run writes: every source's records (their dataset records excepted), the
PNGs and the per-image statistics; each tokenizer's dataset metrics are then reduced again from the per-image
statistics of all its images (`stats.reduce_statistics`, sorted ids) - never an average of per-shard numbers.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

from vision_tokenizers.results.constants import GRID_IMAGES, RECORDS_FILE
from vision_tokenizers.results.protocol import MixedProtocols, mixing_problems
from vision_tokenizers.results.stats import load_statistics, reduce_statistics
from vision_tokenizers.results.store import _merge_images, append_record, read_records_checked, record_files

COPIED = ("originals", "recon", "stats")


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


def merge_reports(sources: list[str | os.PathLike], out: str | os.PathLike, *, allow_mixed: bool = False,
                  max_images: int = GRID_IMAGES) -> dict[str, Path]:
    """Merge the report directories `sources` into `out` (created; must hold no records yet) and build its report.

    Raises MixedProtocols (naming the differing fields) when the sources' rows were measured under different
    protocols or tokenizer configs, unless `allow_mixed`. Missing shards are warned about and listed in the report.
    """
    from vision_tokenizers.results.report import build_report

    out = Path(out)
    sources = [Path(s) for s in sources]
    if record_files(out):
        raise FileExistsError(f"--out {out} already holds records; merge into a new directory")
    records, shard_datasets, problems = [], [], []
    for source in sources:
        if not record_files(source):
            raise FileNotFoundError(f"no records*.jsonl in {source}")
        found, dropped = read_records_checked(source)
        records += [r for r in found if r.get("type") != "dataset"]
        shard_datasets += [r for r in found if r.get("type") == "dataset"]  # their backends and settings are kept
        problems += dropped
    lines = mixing_problems(records)
    if lines and not allow_mixed:
        raise MixedProtocols("refusing to merge rows measured under different protocols (pass --allow-mixed to merge "
                             "anyway):\n" + "\n".join(f"  {line}" for line in lines))
    notes = _shard_problems([r for r in records if r.get("type") == "run"])
    for note in notes + problems:
        warnings.warn(note, stacklevel=2)
    out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        for sub in COPIED:
            if (source / sub).is_dir():
                shutil.copytree(source / sub, out / sub, dirs_exist_ok=True)
    target = out / RECORDS_FILE
    for rec in records:
        append_record(target, rec)
    append_record(target, {"type": "merge", "sources": [str(s) for s in sources], "notes": notes + problems,
                           "mixed": lines})
    for rec in merged_dataset_records(out, records + shard_datasets):
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
        metrics, meta = reduce_statistics(load_statistics(report_dir, stats),
                                          pixels_per_image=resolution**2 if resolution else None)
        bpp = tok_rows[0]["metrics"].get("bpp")
        if bpp is not None:
            metrics = {"bpp": bpp, **metrics}
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
