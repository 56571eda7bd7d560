"""The table writers: benchmark_results.csv, summary.md and report.json."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from vision_tokenizers.results.aggregate import BAD_INPUT, FAILED_BATCH, FAILED_IMAGE
from vision_tokenizers.results.constants import (
    CONVENTIONS,
    GRID_CELL,
    METRICS,
    QUALITY,
    RECORDS_FILE,
    TOKEN_STATS,
    WORST_K,
)
from vision_tokenizers.results.formatting import (
    _md,
    _missing_text,
    _Notes,
    _num,
    _plural,
    _time_pm,
    fmt_time,
    metric_cell,
    timing_facts,
)
from vision_tokenizers.results.sections import (
    protocol_lines,
    seed_spread_lines,
    token_analysis_lines,
    trust_lines,
    worst_case_lines,
)
from vision_tokenizers.results.store import _jsonable
from vision_tokenizers.results.text import text_lines

IMAGE_PROBLEMS = (BAD_INPUT, FAILED_IMAGE, FAILED_BATCH)


def write_csv(report: dict, path: str | os.PathLike) -> Path:
    """benchmark_results.csv: one row per image x tokenizer; a metric that was not computed is an empty cell."""
    rows = report["images"]
    metrics = list(dict.fromkeys([m for m in (*QUALITY, "bpp") if any(m in r["metrics"] for r in rows)]
                                 + sorted({m for r in rows for m in r["metrics"]})))
    ids = [k for k in ("protocol", "config") if any(r.get(k) for r in rows)]  # what each row was measured under
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tokenizer", "image_id", "dataset", "resolution", *metrics, *ids])
        for r in rows:
            values = [r["metrics"].get(m) for m in metrics]
            writer.writerow([r["tokenizer"], r["image_id"], r.get("dataset") or "", r.get("resolution") or "",
                             *("" if v is None else v for v in values), *(r.get(k) or "" for k in ids)])
    return path


def _best(report: dict, metric: str) -> str | None:
    direction = METRICS.get(metric, ("", "", 0, 0))[2]
    means = {name: t["metrics"].get(metric, {}).get("mean") for name, t in report["tokenizers"].items()}
    if metric in ("fid", "kid"):
        means = {name: t["dataset_metrics"].get(metric) for name, t in report["tokenizers"].items()}
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
    L += _problem_lines(report)
    L += trust_lines(report)
    errors = list(errors)
    if errors:
        L += ["> **Report errors** (the numbers below are complete; these artefacts are not):", ">"]
        L += [f"> - {_md(e)}" for e in errors] + [""]

    L += ["## Reconstruction quality", ""]
    if "summary_png" in files:
        L += [f"![summary]({files['summary_png'].name})", ""]
    if "sweep_png" in files:
        L += ["Quality against the swept generation setting (one line per tokenizer):", "",
              f"![quality vs setting]({files['sweep_png'].name})", ""]
    extra = sorted(m for m in {m for t in toks.values() for m in t["metrics"]} - {*QUALITY, "bpp"}
                   if not m.startswith("text_"))  # text fidelity has its own section (means over boxes)
    cols = [*QUALITY, *extra, "fid"] + (["kid"] if any("kid" in t["dataset_metrics"] for t in ran.values()) else [])
    head = [METRICS.get(m, (m,))[0] + (f" ({METRICS[m][1]})" if m in METRICS and METRICS[m][1] else "")
            + {1: " ↑", -1: " ↓"}.get(METRICS.get(m, ("", "", 0))[2], "") for m in cols]
    L += ["| Tokenizer | Res. | Images | " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * len(cols)]
    best = {m: _best(report, m) for m in cols}
    for name, t in ran.items():
        cells = []
        for m in cols:
            reason = t["missing"].get(m) or (t["missing"].get("fid") if m == "kid" else None)
            cell = notes.cell(metric_cell(t, m), reason)
            cells.append(f"**{cell}**" if best[m] == name else cell)
        res = t["resolution"]
        L.append(f"| `{name}` | {res if res is not None else '–'} | {t['n_images']} | " + " | ".join(cells) + " |")
    L += ["", *notes.flush()]
    for name, t in toks.items():
        if name not in ran:
            L += [f"Not run: `{name}`: {_md(_missing_text(t['skip_reason']))}", ""]
    L += ["Bold: best in column. rFID: (n = number of images in the set). [a, b]: bootstrap 95 % interval of the "
          "mean over images.", ""]
    small = [m for m in ("fid", "kid") if any(metric_cell(t, m).endswith("†") for t in ran.values())]
    if small:
        L += ["† n is below the Inception feature dimension (2048): the covariances are rank-deficient and rFID is "
              "biased upward (KID is unbiased but noisy); compare only numbers with the same n.", ""]
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
        device, random, batch = timing_facts(t["timing"])
        cells = [(f"`{device}`" if device else "–") + (", random weights" if random else ""), batch]
        for stage, x in (("encode", enc), ("decode", dec)):
            reason = t["missing"].get(stage)
            cells.append(_time_pm(x) if x else notes.cell(_missing_text(reason), reason))
        for x in (enc, dec):
            cells.append(f"{x['images_per_s']:.3g}" if x and x["images_per_s"] else "–")
        cells.append("/".join(dict.fromkeys(str(x["rounds"]) for x in (enc, dec) if x and x.get("rounds"))) or "–")
        L.append(f"| `{name}` | " + " | ".join(cells) + " |")
    L += ["", *notes.flush(), "Per-image time: median ± IQR of one batch divided by the batch size.", ""]
    if any(x.get("random_weights") for t in ran.values() for x in t["timing"].values()):
        L += ["Random weights (`--random-weights`): the released-size networks built from their configurations with "
              "random initialisation, timed without their weight files; speed only, their outputs mean nothing.", ""]

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
            cells.append(f"{fmt_time(dec['per_image_s']) if dec else '–'}"
                         f"{' (random weights)' if dec and dec.get('random_weights') else ''} / "
                         f"{fmt_time(pub['decode_s']) if 'decode_s' in pub else '–'}")
            L.append(f"| `{name}` | " + " | ".join(cells) + " |")
        L += ["", "Published timings had no warm-up or device sync (their std exceeds the mean); compare with care.",
              ""]

    L += text_lines(report, files)
    L += token_analysis_lines(report, files)
    L += seed_spread_lines(report)
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
    L += worst_case_lines(files, WORST_K)
    L += protocol_lines(report)

    L += ["## Skipped", ""]
    skips = [s for s in report["skips"] if s.get("what") not in IMAGE_PROBLEMS]  # listed in their own section
    if skips:
        for s in skips:
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


def _problem_lines(report: dict) -> list[str]:
    """"Bad inputs and failed images": counts per tokenizer, every bad input file once, every failure."""
    toks = {name: t for name, t in report["tokenizers"].items()
            if t.get("bad_inputs") or t.get("failed_images") or t.get("failed_batches")}
    if not toks:
        return []
    L = ["## Bad inputs and failed images", "",
         "Left out of every number in this report: input files that could not be read, and images a tokenizer could "
         "not reconstruct (its model call failed, or its output had NaN/Inf).", "",
         "| Tokenizer | Bad input files | Failed images | Failed batches |", "|---|---:|---:|---:|"]
    L += [f"| `{name}` | {len(t['bad_inputs'])} | {len(t['failed_images'])} | {len(t['failed_batches'])} |"
          for name, t in toks.items()]
    bad: dict[tuple[str, str], list[str]] = {}
    for name, t in toks.items():
        for item in t["bad_inputs"]:
            bad.setdefault((item["image_id"], item["reason"]), []).append(name)
    if bad:
        L += ["", f"Bad input files ({len(bad)}):", ""]
        for (image_id, reason), names in bad.items():
            who = "" if len(names) == len(toks) else " (" + ", ".join(f"`{n}`" for n in names) + ")"
            L.append(f"- `{_md(image_id)}`{who}: {_md(reason)}")
    for name, t in toks.items():
        in_batches = {i for b in t["failed_batches"] for i in b["image_ids"]}
        lines = [f"- batch of {len(b['image_ids'])} (" + ", ".join(f"`{_md(i)}`" for i in b["image_ids"]) + "): "
                 + _md(b["reason"]) for b in t["failed_batches"]]
        lines += [f"- `{_md(f['image_id'])}`: {_md(f['reason'])}" for f in t["failed_images"]
                  if f["image_id"] not in in_batches]
        if lines:
            L += ["", f"Failed in `{name}` ({_plural(len(t['failed_images']), 'image')}):", "", *lines]
    return L + [""]


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
