"""The end of `pytest bench` on the terminal: the quality table (the numbers of summary.md, from the built report),
the speed table when encode/decode were timed, one line per tokenizer that was not run with its short reason, and the
metrics that were not measured."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from vision_tokenizers.results.formatting import _num, _plural, fmt_time, metric_cell, timing_facts

# (metric, column header); "bpp" is the tokenizer's storage rate, the last column
COLUMNS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS"), ("fid", "rFID"), ("bpp", "bits/pixel"))
DETAIL = ("mean ± std [95 % interval]", "mean ± std over images", "mean over images")


def _cell(tok: Mapping, metric: str, detail: int) -> str:
    """The table cell at a level of detail: 0 as in summary.md (± std, bootstrap interval), 1 mean ± std, 2 mean."""
    if metric == "bpp":
        return _num(tok.get("bpp"), "bpp")
    if metric == "fid":
        if "fid" not in tok["dataset_metrics"]:
            return "–"
        text = metric_cell(tok, "fid")  # "12.45 (n=7) †": the set size matters for rFID
        return text if detail == 0 else text.split(" (n=")[0] + (" †" if text.endswith("†") else "")
    stats = tok["metrics"].get(metric)
    if not stats or stats.get("mean") is None:
        return "–" if not stats else metric_cell(tok, metric)  # non-finite values are counted, not hidden
    if detail == 0:
        return metric_cell(tok, metric)
    if detail == 1 and stats.get("std") is not None:
        return f"{_num(stats['mean'], metric)} ± {_num(stats['std'], metric)}"
    return _num(stats["mean"], metric)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = range(1, len(widths))  # numbers right-aligned, names left
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(
        zip(row, widths, strict=True))).rstrip() for row in rows]


def _hint(report: Mapping, name: str) -> str:
    """The short reason a tokenizer was not run (the skip's `hint`), else its full recorded reason."""
    for skip in reversed(report.get("skips") or []):
        if skip.get("tokenizer") == name and skip.get("what") == "tokenizer":
            return str(skip.get("hint") or skip.get("reason") or "no reason recorded")
    return str(report["tokenizers"][name].get("skip_reason") or "no reason recorded")


def terminal_lines(report: Mapping, width: int = 120) -> list[str]:
    """Plain-text lines for the terminal: the quality table at the most detail that fits `width` (the bootstrap
    intervals go first, then the std), what was not measured, and one line per tokenizer that was not run."""
    toks = report["tokenizers"]
    measured = {name: t for name, t in toks.items() if t["n_images"]}
    lines: list[str] = []
    if measured:
        head = ["tokenizer", "res.", "n", *(label for _, label in COLUMNS)]
        for detail in range(len(DETAIL)):
            rows = [head] + [[name, str(t["resolution"] if t["resolution"] is not None else "–"), str(t["n_images"]),
                              *(_cell(t, metric, detail) for metric, _ in COLUMNS)] for name, t in measured.items()]
            table = _table(rows)
            if max(map(len, table)) <= width:
                break
        lines += [f"vtok: reconstruction quality ({DETAIL[detail]})", *table]
        if any(r[6].endswith("†") for r in rows[1:]):
            lines.append("† rFID on fewer images than its 2048 features: biased upward; compare equal n")
        for metric, label in COLUMNS:
            reasons = {t["missing"].get(metric) for t in measured.values() if _cell(t, metric, 2) == "–"}
            for reason in sorted(r for r in reasons if r):
                reason = reason.removeprefix(f"{metric}: ")
                lines.append(textwrap.shorten(f"{label} not measured (see summary.md): {reason}", width,
                                              placeholder=" …"))
        for name, t in measured.items():
            failed = len(t.get("failed_images") or [])
            if failed:
                lines.append(f"{name}: {_plural(failed, 'image')} failed, left out of its numbers (listed in "
                             "summary.md)")
        lines += text_terminal_lines(report)
    speed = speed_terminal_lines(report)
    if not measured:
        lines.append("vtok: no tokenizer produced quality numbers" if speed else "vtok: no tokenizer produced numbers")
    lines += speed
    for name, t in toks.items():
        if t["n_images"]:
            continue
        if t["status"] == "skipped":
            lines.append(f"not run: {name}: {_hint(report, name)}")
        elif t.get("failed_images"):
            lines.append(f"failed: {name}: every image failed (reasons in summary.md)")
    return lines


def speed_terminal_lines(report: Mapping) -> list[str]:
    """Median encode and decode time per image of every timed tokenizer (summary.md's speed table, without the
    spread); `random weights` said where the networks had them (`--random-weights`)."""
    rows = [["tokenizer", "device", "batch", "encode / image", "decode / image"]]
    for name, t in report["tokenizers"].items():
        timing = t.get("timing") or {}
        if not timing:
            continue
        device, random, batch = timing_facts(timing)
        rows.append([name, f"{device or '–'}{', random weights' if random else ''}", batch,
                     *(fmt_time((timing.get(stage) or {}).get("per_image_s")) for stage in ("encode", "decode"))])
    if len(rows) == 1:
        return []
    return ["vtok: speed (median per image, pytest-benchmark)", *_table(rows)]


def text_terminal_lines(report: Mapping) -> list[str]:
    """Text fidelity per tokenizer and height bucket, as summary.md's table (% over boxes; the originals' reads are
    the OCR ceiling); nothing when no tokenizer measured text."""
    from vision_tokenizers.results.text import bucket_range, text_results
    from vision_tokenizers.text_fidelity import buckets, summarize

    rows = [["tokenizer", "res.", "text height", "boxes", "T-ACC", "T-NED", "originals T-ACC", "originals T-NED"]]
    for name, t in text_results(report).items():
        resolution = int(t["resolution"] or 512)
        summary = summarize(t["boxes"], resolution)
        for label, lo, hi in [*buckets(resolution), ("", 0.0, 0.0)]:
            suffix = f"@{label}" if label else ""
            n = int(summary.get(f"text_boxes{suffix}", 0))
            if not n:
                continue
            cells = [f"{100 * summary[f'text_{k}{suffix}']:.1f}" for k in ("acc", "ned", "acc_original",
                                                                          "ned_original")]
            rows.append([name, str(resolution), bucket_range(lo, hi, resolution) if label else "all", str(n), *cells])
    if len(rows) == 1:
        return []
    return ["vtok: text fidelity (OCR, % over boxes; originals: the recognizer's ceiling)", *_table(rows)]


__all__ = ["terminal_lines"]
