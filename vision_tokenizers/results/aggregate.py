"""Aggregation: dedupe records and reduce them to per-tokenizer numbers (the content of report.json)."""

from __future__ import annotations

import datetime as _dt
import math
import os
import statistics
from collections.abc import Iterable, Mapping

from vision_tokenizers.results.constants import CONVENTIONS, QUALITY, STAGES, TOKEN_STATS
from vision_tokenizers.results.protocol import protocol_summary
from vision_tokenizers.results.store import _merge_images, _records
from vision_tokenizers.results.uncertainty import BOOTSTRAP_RESAMPLES, add_intervals, add_seed_spread

# Skip records about single images: an input file that could not be read (tokenizer None = every tokenizer), an image
# whose reconstruction was not finite, a batch whose model call raised (`image_ids`).
BAD_INPUT, FAILED_IMAGE, FAILED_BATCH = "image", "image:failed", "batch"
BAD_ANNOTATION = "annotation"  # one bad entry of a dataset's annotations.json (text fidelity)


def _recorded_after(images: dict, tokenizer: str, image_id: str, seq: int) -> bool:
    rec = images.get((tokenizer, str(image_id)))
    return rec is not None and max(rec["seq"].values(), default=-1) > seq


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
    if what in (BAD_INPUT, FAILED_IMAGE) and skip.get("image_id") is not None:
        return _recorded_after(images, tok, skip["image_id"], seq)
    if what == FAILED_BATCH:
        return all(_recorded_after(images, tok, i, seq) for i in skip.get("image_ids") or [])
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


def _tokenizer_facts(records: list[Mapping]) -> dict[str, dict]:
    """Tokenizer name -> the facts the run recorded about it (the latest `tokenizer` record wins).

    Reports stand on their records alone: the registry is never consulted, so an old run re-rendered by new code
    shows what was measured (and published) then.
    """
    facts: dict[str, dict] = {}
    for rec in records:
        if rec.get("type") == "tokenizer" and rec.get("tokenizer") is not None:
            facts[str(rec["tokenizer"])] = {**(rec.get("facts") or {}), "settings": rec.get("settings") or {},
                                            "weights": rec.get("weights") or {}, "sweep": rec.get("sweep")}
    return facts


def aggregate(records: Iterable[Mapping] | str | os.PathLike, *, bootstrap: int | None = None) -> dict:
    """Dedupe records and reduce them to per-tokenizer numbers (the content of report.json).

    Returns {"runs", "tokenizers": {name: {...}}, "images": [merged image records], "skips", "conventions",
    "protocols", "mixed", "store_events", "bootstrap"}. Every metric that was not computed is absent from "metrics"
    and has its reason in "missing". Per-image means carry bootstrap 95 % intervals (`bootstrap` resamples; default:
    the latest run's --bootstrap, else 1000).
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
        key = (rec.get("tokenizer"), rec.get("what"), rec.get("image_id"), tuple(map(str, rec.get("image_ids") or ())),
               rec.get("reason") if rec.get("what") == BAD_ANNOTATION else None)  # each bad entry is its own line
        dedup[key] = (seq, rec)
    active = []
    for seq, rec in sorted(dedup.values(), key=lambda s: s[0]):
        if _skip_superseded(rec, seq, images, datasets, timings):
            continue
        rec = {k: v for k, v in rec.items() if k != "ts"}
        if rec.get("what") == FAILED_BATCH:  # images of the batch that a later run did reconstruct are no longer failed
            rec["image_ids"] = [str(i) for i in rec.get("image_ids") or []
                                if not _recorded_after(images, str(rec.get("tokenizer")), i, seq)]
        active.append(rec)

    facts = _tokenizer_facts(records)
    tokenizers = {name: _aggregate_tokenizer(name, images, datasets.get(name), timings, active, facts.get(name))
                  for name in order}
    image_rows = sorted(({k: v for k, v in rec.items() if k != "seq"} for rec in images.values()),
                        key=lambda r: (list(order).index(r["tokenizer"]), r["image_id"]))
    report = {"generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "runs": [{k: v for k, v in r.items() if k != "ts"} for r in runs],
              "tokenizers": tokenizers, "images": image_rows, "skips": active, "conventions": list(CONVENTIONS),
              **protocol_summary(records)}
    if bootstrap is None:
        bootstrap = next((int(r["options"]["bootstrap"]) for r in reversed(runs)
                          if isinstance((r.get("options") or {}).get("bootstrap"), int)), BOOTSTRAP_RESAMPLES)
    add_intervals(report, bootstrap)
    add_seed_spread(report, records)
    return report


def _image_problems(name: str, skips: list[Mapping]) -> dict[str, list[dict]]:
    """A tokenizer's bad input files, failed images (with their reason) and failed batches, in record order.

    A failed batch's images are failed images too (with the batch's reason); nothing here is in the averages.
    """
    bad: dict[str, str] = {}
    failed: dict[str, str] = {}
    batches: list[dict] = []
    for rec in skips:
        who, what, reason = rec.get("tokenizer"), rec.get("what"), str(rec.get("reason", ""))
        if what == BAD_INPUT and who in (name, None) and rec.get("image_id") is not None:
            bad[str(rec["image_id"])] = reason
        elif what == FAILED_IMAGE and who == name and rec.get("image_id") is not None:
            failed[str(rec["image_id"])] = reason
        elif what == FAILED_BATCH and who == name and rec.get("image_ids"):
            batches.append({"image_ids": list(rec["image_ids"]), "reason": reason})
            failed.update(dict.fromkeys(rec["image_ids"], reason))
    return {"bad_inputs": [{"image_id": k, "reason": v} for k, v in bad.items()],
            "failed_images": [{"image_id": k, "reason": v} for k, v in failed.items()],
            "failed_batches": batches}


def _skip_reason(skips: list[Mapping], tokenizer: str, *whats: str) -> str | None:
    """The reason of the latest skip for `tokenizer` (or for every tokenizer) whose `what` is one of `whats`."""
    for rec in reversed(skips):
        if rec.get("what") in whats and rec.get("tokenizer") in (tokenizer, None):
            return str(rec.get("reason", ""))
    return None


def _aggregate_tokenizer(name: str, images: dict, dataset: dict | None, timings: dict, skips: list,
                         spec: dict | None) -> dict:
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
                         "median_s": median, "iqr_s": iqr, "rounds": t.get("rounds"), "device": t.get("device"),
                         "random_weights": bool(t.get("random_weights"))}
    resolutions = sorted({int(r["resolution"]) for r in rows if r.get("resolution") is not None})
    bpp = metrics.get("bpp", {}).get("mean")
    if bpp is None:
        bpp = dataset_metrics.get("bpp", spec.get("bits_per_pixel") if spec else None)
    problems = _image_problems(name, skips)
    return {
        "status": "skipped" if tok_skip and not rows else "failed" if problems["failed_images"] and not rows else "ok",
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
        "published": spec.get("published") if spec else None,
        **problems,
    }
