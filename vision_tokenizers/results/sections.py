"""summary.md sections about trusting and comparing numbers: protocol, store problems, token analysis, worst cases;
and summary_results.csv (one row per tokenizer, with confidence intervals)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

from vision_tokenizers.results.constants import METRICS, QUANT_PAIRS
from vision_tokenizers.results.formatting import _md, _num

DATASET_COLUMNS = ("fid", "kid", "kid_std", "fid_n", "codebook_usage", "unique_codes", "entropy_bits", "perplexity",
                   "bpp_measured")


INTERRUPTED_NOTE = ("Interrupted: this report covers what was done before the run was stopped; run the same command "
                    "again to compute only the missing images.")


def trust_lines(report: dict) -> list[str]:
    """Warnings that change how the numbers may be read: an interrupted run, mixed protocols, dropped record lines,
    merged sources."""
    L: list[str] = [f"> **{INTERRUPTED_NOTE}**", ""] if report.get("interrupted") else []
    if report.get("mixed"):
        L += ["> **Mixed protocols:** the rows below were not all measured the same way; compare with care.", ">"]
        L += [f"> - {_md(line)}" for line in report["mixed"]] + [""]
    events = report.get("store_events") or []
    problems = report.get("record_problems") or []
    if events or problems:
        L += ["Records: " + "; ".join(
            [f"a torn last line ({e.get('bytes')} bytes) of `{e.get('file')}` left by a killed run was dropped "
             f"(kept in `{e.get('kept_in')}`)" for e in events] + [_md(p) for p in problems]) + ".", ""]
    for merge in report.get("merges") or []:
        L += [f"Merged from {len(merge.get('sources') or [])} report directories (`python -m reports merge`); "
              "dataset metrics reduced again from every image's statistics."]
        L += [f"- {_md(note)}" for note in merge.get("notes") or []] + [""]
    return L


def protocol_lines(report: dict) -> list[str]:
    """## Protocol: the fields that decide whether two numbers are comparable (all of them in report.json)."""
    protocols = {pid: p for pid, p in (report.get("protocols") or {}).items() if p}
    if not protocols:
        return []
    L = ["## Protocol", ""]
    for pid, p in protocols.items():
        data, num, gen = p.get("dataset") or {}, p.get("numerics") or {}, p.get("generation") or {}
        metrics, libs, images = p.get("metrics") or {}, p.get("libraries") or {}, p.get("images") or {}
        # a part of a standard set (an incomplete ImageNet folder, --num-images) never passes for the whole of it
        subset = f"; subset: {_md(str(data['subset']))}, not the standard {_md(str(data.get('standard')))}" \
            if data.get("subset") else ""
        L += [f"Protocol `{pid}` (every CSV row names it):", "",
              f"- dataset `{data.get('name')}`: {data.get('files')} files, list sha256 "
              f"`{str(data.get('file_list_sha256'))[:16]}…`" + subset,
              f"- images: {_md(images.get('crop', ''))}; {_md(images.get('rounding', ''))}",
              "- numerics: " + ", ".join(f"{k} {num[k]}" for k in (
                  "device", "gpu", "dtype", "tf32_matmul", "tf32_cudnn", "cudnn_deterministic", "cudnn_benchmark",
                  "matmul_precision") if k in num),
              "- metrics: " + "; ".join(f"{name}: " + _md(str(m.get("backend") or (
                  "not measured" if m.get("available") is False else ", ".join(f"{k} {v}" for k, v in m.items()))))
                  for name, m in metrics.items()),
              "- libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v != "not installed"),
              "- generation: " + (", ".join(f"{k} {v}" for k, v in gen.items() if v is not None and v is not False
                                            and v != "") or "defaults"), ""]
    checkpoints = {name: (t.get("spec") or {}).get("weights") for name, t in report["tokenizers"].items()}
    shown = [f"`{name}`: " + ", ".join(f"{f} `{str((w or {}).get('sha256'))[:12]}…`" for f, w in weights.items())
             for name, weights in checkpoints.items() if weights]
    if shown:
        L += ["Checkpoints (sha256): " + "; ".join(shown) + ".", ""]
    return L


def token_analysis_lines(report: dict, files: Mapping[str, Path]) -> list[str]:
    """## Token analysis: nominal vs measured rate, per-position entropy, and the 8-bit latent pair(s)."""
    toks = {n: t for n, t in report["tokenizers"].items() if t["status"] != "skipped"}
    rows = []
    for name, t in toks.items():
        dm, meta, spec = t["dataset_metrics"], t["dataset_meta"], t.get("spec") or {}
        entropy = meta.get("position_entropy")
        if "bpp_measured" not in dm and not entropy:
            continue
        pos = (f"{sum(entropy) / len(entropy):.2f} / {min(entropy):.2f} / {max(entropy):.2f} "
               f"(≤ {meta.get('position_entropy_bound', 0):.2f})") if entropy else "–"
        rows.append(f"| `{name}` | {'×'.join(map(str, meta.get('token_grid') or [])) or '–'} | "
                    f"{spec.get('codebook_size') or '–'} | {_num(t['bpp'], 'bpp')} | "
                    f"{_num(dm.get('bpp_measured'), 'bpp')} | {_num(dm.get('entropy_bits'), 'entropy_bits')} | {pos} |")
    pairs = [(q, f) for q, f in QUANT_PAIRS if q in toks and f in toks]
    if not rows and not pairs and "position_entropy_png" not in files:
        return []
    L = ["## Token analysis", ""]
    if rows:
        L += ["| Tokenizer | Token grid | Codebook | Bits/pixel nominal | Bits/pixel measured | Entropy (bits/token) "
              "| Position entropy mean / min / max (bound) |", "|---|---|---:|---:|---:|---:|---|", *rows, "",
              "Nominal: tokens × log2 K per pixel. Measured: the entropy of the dataset's id histogram instead of "
              "log2 K. Position entropy: entropy of the id at each token position across images, bounded by "
              "log2 min(n, K), so it says little with few images.", ""]
    if "position_entropy_png" in files:
        L += [f"![per-position entropy]({files['position_entropy_png'].name})", ""]
    for q8, fp in pairs:
        L += [f"8-bit latent quantisation: `{q8}` against `{fp}` (same VAE, fp32 latents):", "",
              "| Metric | 8-bit | fp32 | Δ (8-bit − fp32) |", "|---|---:|---:|---:|"]
        for metric in ("psnr", "ssim", "lpips", "fid", "bpp"):
            a, b = (_value(toks[n], metric) for n in (q8, fp))
            if a is None and b is None:
                continue
            delta = _num(a - b, metric) if a is not None and b is not None else "–"
            L.append(f"| {METRICS.get(metric, (metric,))[0]} | {_num(a, metric)} | {_num(b, metric)} | {delta} |")
        L.append("")
    return L


def seed_spread_lines(report: dict) -> list[str]:
    """## Seed spread: for sampling de-tokenizers run with --seeds K, is a difference the seed or the image?"""
    toks = {n: t["seed_spread"] for n, t in report["tokenizers"].items() if t.get("seed_spread", {}).get("metrics")}
    if not toks:
        return []
    L = ["## Seed spread", "", "| Tokenizer | Seeds | Metric | Between-image std | Between-seed std |",
         "|---|---:|---|---:|---:|"]
    for name, spread in toks.items():
        for metric, s in spread["metrics"].items():
            L.append(f"| `{name}` | {spread['seeds']} | {METRICS.get(metric, (metric,))[0]} | "
                     f"{_num(s['between_image_std'], metric)} | {_num(s['between_seed_std'], metric)} |")
    return L + ["", "Each image decoded with run seeds seed .. seed+K-1 (one generator per image and seed). "
                "Between-image: std across images of each image's mean over its seeds; between-seed: root mean over "
                "images of the std across one image's seeds. The tables above use the first seed.", ""]


def _value(tok: dict, metric: str) -> float | None:
    if metric == "bpp":
        return tok["bpp"]
    if metric in tok["metrics"]:
        return tok["metrics"][metric]["mean"]
    return tok["dataset_metrics"].get(metric)


def worst_case_lines(files: Mapping[str, Path], k: int) -> list[str]:
    grids = [(key, p) for key, p in files.items() if key.startswith("worst_")]
    if not grids:
        return []
    L = ["## Worst cases", ""]
    for key, p in grids:
        metric = key[len("worst_"):]
        L += [f"The {k} worst reconstructions of each tokenizer by {METRICS.get(metric, (metric,))[0]} "
              "(original, reconstruction, |difference| × 4):", "", f"![{key}]({p.name})", ""]
    return L


def write_summary_csv(report: dict, path: str | os.PathLike) -> Path:
    """summary_results.csv: one row per tokenizer: each per-image metric's mean, std, bootstrap 95 % interval and n,
    the dataset metrics (rFID with its n, KID ± std, codebook statistics, measured bits/pixel), protocol id."""
    toks = report["tokenizers"]
    per_image = list(dict.fromkeys(m for t in toks.values() for m in t["metrics"]))
    header = ["tokenizer", "status", "n_images", "resolution", "protocol"]
    header += [f"{m}_{s}" for m in per_image for s in ("mean", "std", "ci_low", "ci_high", "n")]
    header += ["bpp", *DATASET_COLUMNS]
    protocols = {r["tokenizer"]: r.get("protocol") for r in report["images"]}
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for name, t in toks.items():
            row = [name, t["status"], t["n_images"], t["resolution"] if t["resolution"] is not None else "",
                   protocols.get(name) or ""]
            for m in per_image:
                s = t["metrics"].get(m, {})
                row += [s.get(k) for k in ("mean", "std", "ci_low", "ci_high", "n")]
            meta = t["dataset_meta"]
            row += [t["bpp"], *(meta.get(c) if c == "fid_n" else t["dataset_metrics"].get(c) for c in DATASET_COLUMNS)]
            writer.writerow(["" if v is None else v for v in row])
    return path
