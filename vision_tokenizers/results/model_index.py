"""Results a model card can carry: one Hugging Face ``model-index`` block per tokenizer of a report.

`write_model_index(report, out)` writes ``out/<tokenizer>.yaml`` for every tokenizer with a measured PSNR, SSIM, LPIPS,
rFID or KID: the YAML header of a model card (``---`` ... ``---``), written by huggingface_hub itself
(`EvalResult`, `ModelCardData`, `metadata_save`), so `huggingface_hub.repocard.metadata_load` reads it back and it
can be pasted on top of a model's README.md. One result per tokenizer: task image-to-image ("Image reconstruction"),
the dataset by its recorded name, split and identity (file-list sha256, image count), and a config naming the
resolution and the protocol id; one metric entry per measured metric, never one for a metric that was skipped.
The numbers are the report's (report.json), to the last bit.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TASK_TYPE = "image-to-image"
TASK_NAME = "Image reconstruction"
# (report key, model-index metric type, display name); psnr / ssim / lpips are means of per-image values,
# fid / kid are computed over the whole image set
PER_IMAGE = (("psnr", "psnr", "PSNR"), ("ssim", "ssim", "SSIM"), ("lpips", "lpips", "LPIPS"))
DATASET_LEVEL = (("fid", "rfid", "rFID"), ("kid", "kid", "KID"))
SPLITS = {"coco_val2017": "val2017"}  # a folder or the bundled samples have no split of their own: "all"


def model_index_filename(name: str) -> str:
    """A file name for tokenizer `name` that is safe on every file system: characters other than letters, digits,
    '.', '_' and '-' become '_', and a name that had to change gets 8 hex digits of its sha256 so that two names
    never share a file (``diffusers:./my_vae`` -> ``diffusers_._my_vae-<hash>.yaml``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "tokenizer"
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return safe + ".yaml"


def _protocols_of(report: Mapping, name: str) -> list[str]:
    return sorted({str(r["protocol"]) for r in report.get("images") or []
                   if r.get("tokenizer") == name and r.get("protocol")})


def _metric_entries(tok: Mapping) -> list[tuple[str, str, float, dict]]:
    """(type, name, value, args) of each measured metric, in a fixed order."""
    out = []
    for key, mtype, label in PER_IMAGE:
        stats = (tok.get("metrics") or {}).get(key) or {}
        if stats.get("mean") is None:
            continue
        args: dict[str, Any] = {"aggregate": "mean over images", "n": stats.get("n")}
        if stats.get("std") is not None:
            args["std"] = stats["std"]
        if stats.get("ci_low") is not None and stats.get("ci_high") is not None:
            args["ci95"] = [stats["ci_low"], stats["ci_high"]]
        out.append((mtype, label, stats["mean"], args))
    values, meta = tok.get("dataset_metrics") or {}, tok.get("dataset_meta") or {}
    for key, mtype, label in DATASET_LEVEL:
        if values.get(key) is None:
            continue
        args = {"aggregate": "over the image set", "n": meta.get("fid_n")}
        if key == "kid":
            args.update(std=values.get("kid_std"), subset_size=meta.get("kid_subset_size"),
                        subsets=meta.get("kid_subsets"))
        if meta.get("fid_backend"):
            args["backend"] = meta["fid_backend"]
        out.append((mtype, label, values[key], {k: v for k, v in args.items() if v is not None}))
    return out


def model_index_results(report: Mapping, name: str) -> tuple[list[Any], str | None]:
    """The `huggingface_hub.EvalResult`s of tokenizer `name` in `report` (the content of report.json), or ([], why
    none can be written)."""
    from huggingface_hub import EvalResult

    tok = report["tokenizers"][name]
    if tok.get("status") == "skipped":
        return [], f"not run ({tok.get('skip_reason') or 'skipped'})"
    entries = _metric_entries(tok)
    if not entries:
        return [], "no PSNR, SSIM, LPIPS, rFID or KID measured"
    resolution, datasets, protocols = tok.get("resolution"), tok.get("datasets") or [], _protocols_of(report, name)
    if not isinstance(resolution, int):
        return [], f"rows at several resolutions ({resolution}): one model-index result needs one"
    if len(protocols) > 1:
        return [], f"rows of several protocols ({', '.join(protocols)}): one model-index result needs one"
    protocol = protocols[0] if protocols else None  # None: rows written outside the benchmark
    fields = ((report.get("protocols") or {}).get(protocol) or {}) if protocol else {}
    data, numerics = fields.get("dataset") or {}, fields.get("numerics") or {}
    dataset = datasets[0] if len(datasets) == 1 else data.get("name")
    if len(datasets) > 1 or not dataset:
        return [], f"rows of {len(datasets)} datasets: one model-index result needs one"
    args = {"resolution": resolution, "protocol": protocol, "images": tok.get("n_images"),
            "file_list_sha256": data.get("file_list_sha256"), "dtype": numerics.get("dtype"),
            "device": numerics.get("device")}
    common = {"task_type": TASK_TYPE, "task_name": TASK_NAME, "dataset_type": str(dataset),
              "dataset_name": str(dataset), "dataset_split": SPLITS.get(str(dataset), "all"),
              "dataset_config": f"{resolution}px" + (f"-protocol-{protocol}" if protocol else ""),
              "dataset_args": {k: v for k, v in args.items() if v is not None}}
    return [EvalResult(**common, metric_type=mtype, metric_name=label, metric_value=value, metric_args=margs)
            for mtype, label, value, margs in entries], None


def write_model_index(report: Mapping, out: str | os.PathLike) -> tuple[dict[str, Path], dict[str, str]]:
    """Write ``out/<tokenizer>.yaml`` (see `model_index_filename`) for each tokenizer of `report` with a measured
    metric. Returns ({tokenizer: file written}, {tokenizer: why not written})."""
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard import metadata_save

    out = Path(out)
    written, left_out = {}, {}
    for name in report["tokenizers"]:
        results, why = model_index_results(report, name)
        if why:
            left_out[name] = why
            continue
        out.mkdir(parents=True, exist_ok=True)
        path = out / model_index_filename(name)
        path.unlink(missing_ok=True)  # metadata_save would keep an older file's text below the header
        metadata_save(path, ModelCardData(model_name=name, eval_results=results).to_dict())
        written[name] = path
    return written, left_out
