"""Text fidelity in a report: the tokenizer x text-height table (T-ACC, T-NED and the originals' OCR ceiling), T-NED
against text height, and the worst text crops. Read from the per-box details each image row carries (``text``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from vision_tokenizers.results.formatting import _md
from vision_tokenizers.text_fidelity import bucket_of, buckets, summarize

TEXT_WORST_K = 8  # worst text crops per tokenizer in grid_worst_text.png
CROP_HEIGHT = 40  # px: every crop in the grid is scaled to this height (nearest neighbour up, LANCZOS down)
CROP_MAX_WIDTH = 360


def text_results(report: dict) -> dict[str, dict]:
    """Tokenizer -> {"resolution", "boxes": per-box details with image_id / original / recon, "cut", "images"}, for
    every tokenizer whose image rows carry text details (in the report's image order)."""
    out: dict[str, dict] = {}
    for row in report["images"]:
        text = row.get("text")
        if not isinstance(text, Mapping):
            continue
        entry = out.setdefault(row["tokenizer"], {"resolution": row.get("resolution") or text.get("side"),
                                                  "boxes": [], "cut": 0, "images": 0})
        entry["cut"] += int(text.get("cut") or 0)
        entry["images"] += 1
        for box in text.get("boxes") or []:
            entry["boxes"].append({**box, "image_id": row["image_id"], "original": row.get("original"),
                                   "recon": row.get("recon")})
    return out


def text_dataset_metrics(rows, resolution: int | None) -> dict[str, float]:
    """A tokenizer's dataset text metrics from its image rows (each with its ``text`` details, or none): means over
    every box, overall and per height bucket, and the number of boxes the centre crop cut; {} when no row has text.
    One function for a run, its resumption and merged shards, so they agree."""
    texts = [r["text"] for r in rows if isinstance(r.get("text"), Mapping)]
    if not texts:
        return {}
    boxes = [b for t in texts for b in t.get("boxes") or []]
    side = resolution or next((t.get("side") for t in texts if t.get("side")), 512)
    return {**summarize(boxes, int(side)), "text_boxes_cut": float(sum(int(t.get("cut") or 0) for t in texts))}


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def bucket_range(lo: float, hi: float, resolution: int) -> str:
    """'0.01–0.02 (5.12–10.2 px)': a height bucket and what it means in pixels of the compared image."""
    if math.isinf(hi):
        return f"≥ {lo:g} (≥ {lo * resolution:.3g} px)"
    if lo == 0:
        return f"< {hi:g} (< {hi * resolution:.3g} px)"
    return f"{lo:g}–{hi:g} ({lo * resolution:.3g}–{hi * resolution:.3g} px)"


def text_lines(report: dict, files: Mapping[str, Path] | None = None) -> list[str]:
    """The "Text fidelity" section of summary.md; empty when no tokenizer measured text."""
    results = text_results(report)
    if not results:
        return []
    files = dict(files or {})
    L = ["## Text fidelity (OCR)", "",
         "Every annotated text box is read by an OCR model from the 8-bit original and from the reconstruction "
         "(recognition only, on the box's pixels). **T-ACC**: share of boxes read exactly as annotated; **T-NED**: "
         "1 − edit distance / longer length; whitespace removed, case ignored. **Originals** "
         "is the same OCR on the un-tokenized crops: the ceiling the model itself allows. Height: box height / side "
         "of the compared image, in TokBench's buckets for the resolution (its table leaves out boxes below the "
         "smallest edge; they are listed here apart). Numbers are % over boxes.", ""]
    backends = {str(t["dataset_meta"].get("text_backend")) for name, t in report["tokenizers"].items()
                if name in results and t["dataset_meta"].get("text_backend")}
    if backends:
        L += ["Recognizer: " + "; ".join(sorted(_md(b) for b in backends)) + ".", ""]
    L += ["| Tokenizer | Res. | Text height | Boxes | T-ACC | T-NED | Originals T-ACC | Originals T-NED |",
          "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, t in results.items():
        resolution = int(t["resolution"] or 512)
        summary = summarize(t["boxes"], resolution)
        for label, lo, hi in buckets(resolution):
            n = int(summary.get(f"text_boxes@{label}", 0))
            if not n:
                continue
            cells = [_pct(summary.get(f"text_{k}@{label}")) for k in ("acc", "ned", "acc_original", "ned_original")]
            L.append(f"| `{name}` | {resolution} | {bucket_range(lo, hi, resolution)} | {n} | "
                     + " | ".join(cells) + " |")
        cells = [_pct(summary.get(f"text_{k}")) for k in ("acc", "ned", "acc_original", "ned_original")]
        L.append(f"| `{name}` | {resolution} | **all** | {int(summary['text_boxes'])} | "
                 + " | ".join(f"**{c}**" for c in cells) + " |")
    L.append("")
    cut = {name: t["cut"] for name, t in results.items() if t["cut"]}
    if cut:
        L += ["Boxes cut by the centre crop (left out): " + ", ".join(f"`{n}` {c}" for n, c in cut.items()) + ".",
              ""]
    L += ["**all** is the mean over every box; TokBench's own summary column is the mean of its three bucket means.",
          ""]
    if "text_ned_png" in files:
        L += [f"![T-NED against text height]({files['text_ned_png'].name})", ""]
    if "text_worst" in files:
        L += [f"![worst text crops]({files['text_worst'].name})", "",
              f"`{files['text_worst'].name}`: per tokenizer the {TEXT_WORST_K} worst-read boxes whose original was "
              "read correctly (then the others): original crop | reconstruction crop | what OCR read from each.",
              ""]
    return L


def _curve(boxes: list[dict], key: str) -> tuple[list[float], list[float], list[int]]:
    """(height ratios, mean of `key`, n) per distinct height (up to 24 of them), else per log-spaced bin."""
    ratios = sorted({round(float(b["ratio"]), 5) for b in boxes})
    if len(ratios) <= 24:
        groups = {r: [b for b in boxes if round(float(b["ratio"]), 5) == r] for r in ratios}
    else:
        lo, hi = math.log(ratios[0]), math.log(ratios[-1])
        step = (hi - lo) / 12 or 1.0
        groups = {}
        for b in boxes:
            k = min(int((math.log(float(b["ratio"])) - lo) / step), 11)
            groups.setdefault(k, []).append(b)
        groups = {math.exp(lo + (k + 0.5) * step): v for k, v in sorted(groups.items())}
    xs = list(groups)
    return xs, [sum(float(b[key]) for b in g) / len(g) for g in groups.values()], [len(g) for g in groups.values()]


def plot_text_ned(report: dict, path: str | os.PathLike) -> Path | None:
    """T-NED against text height (box height / image side, log scale): one line per tokenizer, the originals' OCR
    ceiling dashed (one line per resolution), TokBench's bucket edges dotted. None when no text was measured."""
    results = text_results(report)
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vision_tokenizers.results.plots import _colors

    colors = _colors(results)
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    ceilings: dict[int, list[dict]] = {}
    for name, t in results.items():
        if not t["boxes"]:
            continue
        xs, ys, _ = _curve(t["boxes"], "ned")
        ax.plot(xs, ys, "o-", color=colors[name], label=f"{name} ({t['resolution']} px)", lw=1.8, ms=4)
        ceilings.setdefault(int(t["resolution"] or 512), []).extend(t["boxes"])
    for resolution, boxes in ceilings.items():
        seen: dict[tuple, dict] = {}  # one original box counts once, however many tokenizers read it
        for b in boxes:
            seen.setdefault((b["image_id"], tuple(b["box"]), b["text"]), b)
        xs, ys, _ = _curve(list(seen.values()), "ned_original")
        ax.plot(xs, ys, "--", color="0.35", lw=1.4, label=f"originals, OCR ceiling ({resolution} px)")
    first = int(next(iter(results.values()))["resolution"] or 512)
    for _, lo, _ in buckets(first)[1:]:
        ax.axvline(lo, color="0.75", ls=":", lw=1)
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5]))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"text height / image side (dotted: TokBench's buckets at {first} px)")
    ax.set_ylabel("T-NED (1 − normalised edit distance)")
    ax.set_ylim(-0.02, 1.02)
    secondary = ax.secondary_xaxis("top", functions=(lambda r: r * first, lambda p: p / first))
    secondary.set_xlabel(f"text height in px at {first} px")
    secondary.xaxis.set_major_locator(FixedLocator([2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 256]))
    secondary.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    secondary.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Text fidelity: T-NED against text height")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def worst_boxes(boxes: list[dict], k: int = TEXT_WORST_K) -> list[dict]:
    """The `k` worst-read boxes: those whose original was read correctly first (the tokenizer lost them), then by
    T-NED, T-ACC and height."""
    return sorted(boxes, key=lambda b: (-float(b["acc_original"]), float(b["ned"]), float(b["acc"]),
                                        float(b["ratio"])))[:k]


def _scaled(crop, height: int):
    from PIL import Image

    scale = height / crop.height
    resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
    crop = crop.resize((max(1, round(crop.width * scale)), height), resample)
    if crop.width > CROP_MAX_WIDTH:
        crop = crop.resize((CROP_MAX_WIDTH, max(1, round(height * CROP_MAX_WIDTH / crop.width))), Image.LANCZOS)
    return crop


def make_text_worst_grid(report: dict, report_dir: str | os.PathLike, path: str | os.PathLike,
                         k: int = TEXT_WORST_K) -> Path | None:
    """grid_worst_text.png: per tokenizer its `k` worst text boxes, each row original crop | reconstruction crop |
    truth, what OCR read from the reconstruction and from the original. Crops come from the saved PNGs (boxes of
    images that were not saved are passed over). None when there is nothing to draw."""
    from PIL import Image, ImageDraw

    from vision_tokenizers.results.grids import _font

    report_dir = Path(report_dir)
    sections = []
    for name, t in text_results(report).items():
        usable = [b for b in t["boxes"] if b.get("original") and b.get("recon")
                  and (report_dir / b["original"]).is_file() and (report_dir / b["recon"]).is_file()]
        if usable:
            sections.append((name, t, worst_boxes(usable, k)))
    if not sections:
        return None
    opened: dict[str, Image.Image] = {}

    def crop(rel: str, box) -> Image.Image:
        if rel not in opened:
            with Image.open(report_dir / rel) as im:
                opened[rel] = im.convert("RGB")
        x0, y0 = int(math.floor(box[0])), int(math.floor(box[1]))
        x1, y1 = max(int(math.ceil(box[2])), x0 + 1), max(int(math.ceil(box[3])), y0 + 1)
        return _scaled(opened[rel].crop((x0, y0, x1, y1)), CROP_HEIGHT)

    crops = {(name, i): (crop(b["original"], b["box"]), crop(b["recon"], b["box"]))
             for name, _, rows in sections for i, b in enumerate(rows)}
    font, bold = _font(13), _font(14, bold=True)
    pad, text_w, row_h = 8, 430, CROP_HEIGHT + 12
    column = max(max(a.width, b.width) for a, b in crops.values())
    width = pad * 4 + 2 * column + text_w
    height = pad + sum(24 + row_h * len(rows) for _, _, rows in sections) + pad
    canvas = Image.new("RGB", (max(width, 620), height), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for name, t, rows in sections:
        resolution = int(t["resolution"] or 512)
        draw.text((pad, y + 4), f"{name}  ({resolution} px): original | reconstruction | truth → read", fill="black",
                  font=bold)
        y += 24
        for i, b in enumerate(rows):
            x = pad
            for picture in crops[(name, i)]:
                canvas.paste(picture, (x, y + (row_h - picture.height) // 2))
                x += column + pad
            height_px = b["ratio"] * resolution
            lines = [f"“{b['text']}” → “{b['read']}”  (T-NED {b['ned']:.2f}, {height_px:.3g} px, "
                     f"{bucket_of(b['ratio'], resolution)})",
                     f"original read “{b['read_original']}”   {b['image_id']}"]
            draw.text((x, y + 6), lines[0], fill=(150, 20, 20) if not b["acc"] else "black", font=font)
            draw.text((x, y + 24), lines[1], fill=(100, 100, 100), font=font)
            y += row_h
    path = Path(path)
    canvas.save(path)
    return path

