"""The protocol record: everything a number depends on besides the tokenizer, stored once per run.

Two numbers are comparable only when their protocols agree: dataset (file list hash and count), crop / resize and
rounding, each metric's implementation and settings, library versions, device, dtype and numerics flags, seeds and
generation settings. Per tokenizer, its settings and checkpoint sha256s are in its ``tokenizer`` record and summarised
by a ``config`` id. Rows reference both ids; a report refuses rows of different protocols unless told to mix them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from vision_tokenizers.results.store import _merge_images

LIBRARIES = ("torch", "torchvision", "torchmetrics", "torch-fidelity", "lpips", "numpy", "pillow", "scikit-image",
             "scipy", "diffusers", "transformers", "timm")
IMAGE_POLICY = {
    "decode": "PIL, EXIF orientation applied, converted to RGB",
    "crop": "ADM centre crop: BOX-halve while the short side >= 2x target, BICUBIC to target, centre crop (square)",
    "compare": "at the tokenizer's resolution on the same crop (reconstructions never resized back)",
    "rounding": "round(x*255) to uint8 once, both sides (never a flooring cast)",
}


class MixedProtocols(ValueError):
    """Rows of different protocols were asked to share one table; the message names the differing fields."""


def short_hash(obj: Any) -> str:
    """16 hex digits of the sha256 of canonical JSON (sorted keys): the id of a protocol or a config."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_id(settings: Mapping[str, Any], weights: Mapping[str, Any], seed: Any = None,
              code: Mapping[str, Any] | None = None) -> str:
    """The id of a tokenizer's configuration: generation settings, checkpoint sha256s (not their paths), seed, and
    for a plug-in the identity of its code (file sha256 / package version), so that an edited plug-in never resumes
    rows of its previous version."""
    hashes = {name: (w.get("sha256") if isinstance(w, Mapping) else w) for name, w in weights.items()}
    fields = {"settings": dict(settings), "weights": hashes, "seed": seed}
    if code:  # built-ins keep the ids they always had
        fields["code"] = {k: v for k, v in code.items() if k in ("sha256", "package", "version")}
    return short_hash(fields)


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def numerics(device: str, dtype: str) -> dict[str, Any]:
    """Device, dtype and the flags that change float results (TF32, cuDNN determinism / autotuning)."""
    import platform

    import torch

    # the device type and model, not its index: shards on cuda:0 and cuda:1 of one machine share a protocol
    out: dict[str, Any] = {"device": torch.device(device).type, "dtype": dtype, "python": platform.python_version(),
                           "matmul_precision": torch.get_float32_matmul_precision(),
                           "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                           "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
                           "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
                           "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                           "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled())}
    if device.startswith("cuda") and torch.cuda.is_available():
        out.update(gpu=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return out


def make_protocol(*, dataset: Mapping[str, Any], metrics: Mapping[str, Any], device: str, dtype: str,
                  resolution: int | None, generation: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol fields of a run (the caller supplies what only it knows: dataset, metric backends)."""
    return {"dataset": dict(dataset), "images": {**IMAGE_POLICY, "resolution": resolution or "each tokenizer's own"},
            "metrics": dict(metrics), "libraries": library_versions(), "numerics": numerics(device, dtype),
            "generation": dict(generation)}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def protocol_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The dotted fields where two protocols differ, as 'field: A vs B'."""
    fa, fb = _flatten(a), _flatten(b)
    return [f"{key}: {fa.get(key, '(absent)')!r} vs {fb.get(key, '(absent)')!r}"
            for key in sorted(set(fa) | set(fb)) if fa.get(key) != fb.get(key)]


def protocols_in(records: Iterable[Mapping]) -> dict[str, dict]:
    """{protocol id: fields} of the protocol records."""
    return {str(r["id"]): dict(r.get("fields") or {}) for r in records if r.get("type") == "protocol" and r.get("id")}


def mixed_protocols(protocols: Mapping[str, Mapping], used: Iterable[str | None]) -> list[str]:
    """Why rows referencing the protocol ids `used` cannot share a table: [] when they can.

    Rows without a protocol (older records, records written outside the benchmark) do not count.
    """
    ids = sorted({u for u in used if u})
    if len(ids) < 2:
        return []
    first = ids[0]
    lines = []
    for other in ids[1:]:
        if first not in protocols or other not in protocols:
            lines.append(f"protocol {first} vs {other}: record missing")
            continue
        diff = protocol_diff(protocols[first], protocols[other])
        lines.append(f"protocol {first} vs {other}: " + ("; ".join(diff) if diff else "same fields"))
    return lines


def _tokenizer_configs(records: Iterable[Mapping]) -> dict[str, dict]:
    """config id -> {"settings", "weights" (sha256 only)} from tokenizer records."""
    out = {}
    for rec in records:
        if rec.get("type") == "tokenizer" and rec.get("config"):
            weights = {k: (v.get("sha256") if isinstance(v, Mapping) else v) for k, v in
                       (rec.get("weights") or {}).items()}
            out[str(rec["config"])] = {"settings": rec.get("settings") or {}, "weights": weights,
                                       "seed": rec.get("seed")}
    return out


def mixing_problems(records: list[Mapping], rows: Iterable[Mapping] | None = None) -> list[str]:
    """Why the rows of `records` (after latest-wins) cannot share one table: different protocols, or one tokenizer
    measured under different configs (settings, checkpoints, seed). [] when they can.

    `rows` (merged image rows with ``tokenizer``, ``protocol``, ``config``) replaces latest-wins over `records` when
    given: a merge checks every row of every source, `records` then only supply the protocol and tokenizer records.
    """
    rows = list(_merge_images(records).values()) if rows is None else list(rows)
    lines = mixed_protocols(protocols_in(records), [r["protocol"] for r in rows])
    configs = _tokenizer_configs(records)
    by_tokenizer: dict[str, set] = {}
    for r in rows:
        if r["config"]:
            by_tokenizer.setdefault(r["tokenizer"], set()).add(r["config"])
    for name, ids in by_tokenizer.items():
        first, *others = sorted(ids)
        for other in others:
            diff = protocol_diff(configs.get(first, {}), configs.get(other, {}))
            lines.append(f"tokenizer {name}: config {first} vs {other}: " + ("; ".join(diff) or "record missing"))
    return lines


def protocol_summary(records: list[Mapping]) -> dict[str, Any]:
    """What a report says about protocols: the ones its rows use, why they cannot share a table (``mixed``), store
    events (a torn line dropped from a killed run's JSONL), merges (`python -m reports merge`) and whether the
    latest run was interrupted (Ctrl-C) before it finished."""
    used = {r["protocol"] for r in _merge_images(records).values() if r["protocol"]}
    latest_dataset = {r.get("tokenizer"): r.get("protocol") for r in records if r.get("type") == "dataset"}
    used |= {str(pid) for pid in latest_dataset.values() if pid}
    protocols = protocols_in(records)
    sessions = [r.get("session") for r in records if r.get("type") == "run"]
    interrupted = bool(sessions) and any(r.get("type") == "interrupted" and r.get("session") == sessions[-1]
                                         for r in records)
    return {"interrupted": interrupted, "protocols": {pid: protocols.get(pid) for pid in sorted(used)},
            "mixed": mixing_problems(records),
            "store_events": [{k: v for k, v in r.items() if k != "ts"} for r in records if r.get("type") == "store"],
            "merges": [{k: v for k, v in r.items() if k != "ts"} for r in records if r.get("type") == "merge"]}
