"""Reconstruction grids (grid.png, grid_<res>.png): originals and one row of reconstructions per tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

from vision_tokenizers.results.constants import GRID_CELL, GRID_IMAGES


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    except Exception:
        return ImageFont.load_default(size)


def _fit(img, cell: int):
    from PIL import Image

    img = img.convert("RGB")
    if img.size == (cell, cell):
        return img
    scale = cell / max(img.size)
    # upscaling: nearest neighbour shows the tokenizer's pixels as they are; downscaling: LANCZOS
    resample = Image.NEAREST if scale > 1 else Image.LANCZOS
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    canvas = Image.new("RGB", (cell, cell), (235, 235, 235))
    canvas.paste(img, ((cell - img.width) // 2, (cell - img.height) // 2))
    return canvas


def _grid_selection(report: dict, report_dir: Path, max_images: int, resolution: int | None):
    """Tokenizers (rows) and image ids (columns) with reconstructions on disk, at `resolution` if given."""
    rows = [r for r in report["images"] if r.get("recon") and (report_dir / r["recon"]).is_file()
            and (resolution is None or r.get("resolution") == resolution)]
    toks = list(dict.fromkeys(r["tokenizer"] for r in rows))
    have: dict[str, set] = {}
    for r in rows:
        have.setdefault(r["image_id"], set()).add(r["tokenizer"])
    ids = list(dict.fromkeys(r["image_id"] for r in rows))
    ids.sort(key=lambda i: -len(have[i]))  # stable: complete columns first, then in recording order
    return toks, ids[:max_images]


def _original_for(report: dict, report_dir: Path, image_id: str, resolution: int | None):
    cands = [r for r in report["images"] if r["image_id"] == image_id and r.get("original")
             and (report_dir / r["original"]).is_file()]
    exact = [r for r in cands if resolution is not None and r.get("resolution") == resolution]
    pick = exact or sorted(cands, key=lambda r: -(r.get("resolution") or 0))
    return report_dir / pick[0]["original"] if pick else None


def make_grid(report: dict, report_dir: str | os.PathLike, path: str | os.PathLike, *,
              resolution: int | None = None, max_images: int = GRID_IMAGES, cell: int | None = None) -> Path | None:
    """A reconstruction grid: a header of image ids, the originals, then one row per tokenizer.

    With `resolution`, only tokenizers at that resolution, at native size (cell = resolution, at most 512);
    without, every tokenizer with every cell resized to `cell` (default 256 px; LANCZOS down, nearest up) so rows align.
    Each reconstruction is captioned with its PSNR / LPIPS. Returns None when no reconstruction was saved.
    """
    from PIL import Image, ImageDraw

    report_dir = Path(report_dir)
    toks, ids = _grid_selection(report, report_dir, max_images, resolution)
    if not toks or not ids:
        return None
    cell = cell or (min(resolution, 512) if resolution else GRID_CELL)
    by = {(r["tokenizer"], r["image_id"]): r for r in report["images"]}
    label_w, head_h, cap_h, pad = max(230, cell * 3 // 4), 34, 22, 6
    row_h = cell + cap_h + pad
    width = label_w + len(ids) * (cell + pad) + pad
    height = head_h + (1 + len(toks)) * row_h + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    f_head, f_label, f_small, f_cap = _font(15, True), _font(16, True), _font(13), _font(12)

    def x_of(j: int) -> int:
        return label_w + pad + j * (cell + pad)

    for j, image_id in enumerate(ids):
        draw.text((x_of(j) + cell // 2, head_h // 2), _shorten(draw, image_id, f_head, cell), font=f_head,
                  fill=(40, 40, 40), anchor="mm")
    res_set = {report["tokenizers"][t]["resolution"] for t in toks}
    common = resolution or (res_set.pop() if len(res_set) == 1 else None)
    rows = [("Original", f"{common} px" if isinstance(common, int) else "largest saved crop", None), *(
        (name, _row_sub(report["tokenizers"][name]), name) for name in toks)]
    for i, (title, sub, tok) in enumerate(rows):
        y = head_h + i * row_h
        if i % 2:
            draw.rectangle([0, y - pad // 2, width, y + row_h - pad // 2], fill=(246, 247, 249))
        draw.text((12, y + cell // 2 - 12), _shorten(draw, title, f_label, label_w - 20), font=f_label,
                  fill=(20, 20, 20), anchor="lm")
        draw.text((12, y + cell // 2 + 12), sub, font=f_small, fill=(100, 100, 100), anchor="lm")
        for j, image_id in enumerate(ids):
            x = x_of(j)
            if tok is None:
                src = _original_for(report, report_dir, image_id, resolution)
                caption = ""
            else:
                rec = by.get((tok, image_id))
                src = report_dir / rec["recon"] if rec and rec.get("recon") else None
                m = rec["metrics"] if rec else {}
                caption = "  ·  ".join(x for x in (f"{m['psnr']:.2f} dB" if m.get("psnr") is not None else "",
                                                   f"LPIPS {m['lpips']:.3f}" if m.get("lpips") is not None else "")
                                       if x)
            if src is not None and src.is_file():
                with Image.open(src) as im:
                    canvas.paste(_fit(im, cell), (x, y))
            else:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(225, 225, 225))
                draw.text((x + cell // 2, y + cell // 2), "missing", font=f_small, fill=(120, 120, 120),
                          anchor="mm")
            if caption:
                draw.text((x + cell // 2, y + cell + cap_h // 2), caption, font=f_cap, fill=(60, 60, 60),
                          anchor="mm")
    path = Path(path)
    canvas.save(path, compress_level=6)
    return path


def _row_sub(tok: dict) -> str:
    spec = tok.get("spec") or {}
    res = tok["resolution"]
    bits = [f"{res} px" if isinstance(res, int) else None,
            f"{spec['num_tokens']:,} tokens" if spec.get("num_tokens") else None]
    return " · ".join(b for b in bits if b) or ""


def _shorten(draw, text: str, font, width: int) -> str:
    text = str(text)
    while len(text) > 4 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if not text.endswith("…") else text[:-2] + "…"
    return text


# ------------------------------------------------------------------------------------------------ worst cases
WORST_METRICS = {"psnr": +1, "lpips": -1}  # metric -> direction (+1: higher is better)


class WorstTracker:
    """Decides, image by image, which reconstructions to save so that the k worst by each metric end up on disk.

    `offer` is True while an image is among the k worst seen so far: every image of the final k worst was, when
    it was offered, among the k worst of the images before it (so it was saved); `seen` primes the tracker with
    images measured earlier (a resumed run). Non-finite values (PSNR inf of a perfect copy) are never worst.
    """

    def __init__(self, k: int, metrics: dict[str, int] | None = None) -> None:
        self.k = k
        self.metrics = dict(WORST_METRICS if metrics is None else metrics)
        self.worst: dict[str, list[tuple[float, str]]] = {m: [] for m in self.metrics}

    def offer(self, image_id: str, values: dict) -> bool:
        import math

        keep = False
        for metric, direction in self.metrics.items():
            value = values.get(metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or self.k <= 0:
                continue
            ranked = self.worst[metric]
            ranked.append((-direction * float(value), str(image_id)))  # larger = worse
            ranked.sort(reverse=True)
            del ranked[self.k:]
            keep |= any(i == str(image_id) for _, i in ranked)
        return keep

    def seen(self, rows: dict[str, dict]) -> None:
        for image_id, values in rows.items():
            self.offer(image_id, values)


def worst_rows(report: dict, metric: str, k: int) -> dict[str, list[dict]]:
    """Tokenizer -> its k worst image rows by `metric` (finite values; ties by image id)."""
    import math

    direction = WORST_METRICS.get(metric, +1)
    out: dict[str, list[dict]] = {}
    for row in report["images"]:
        value = row["metrics"].get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.setdefault(row["tokenizer"], []).append(row)
    return {name: sorted(rows, key=lambda r: (direction * r["metrics"][metric], r["image_id"]))[:k]
            for name, rows in out.items()}


def make_worst_grid(report: dict, report_dir: str | os.PathLike, path: str | os.PathLike, metric: str, *,
                    k: int = 4, cell: int = 160, amplify: float = 4.0) -> Path | None:
    """grid_worst_<metric>.png: per tokenizer its k worst reconstructions by `metric`: the original, the
    reconstruction and |original - reconstruction| x `amplify`, captioned with image id and value. A reconstruction
    that was not saved is drawn as 'not saved'. None when no tokenizer has the metric."""
    import numpy as np
    from PIL import Image, ImageDraw

    report_dir = Path(report_dir)
    selection = worst_rows(report, metric, k)
    if not any(r.get("recon") and (report_dir / r["recon"]).is_file() for rows in selection.values() for r in rows):
        return None
    label_w, cap_h, pad = 200, 30, 6
    rows_per_tok = 3
    width = label_w + k * (cell + pad) + pad
    height = pad + len(selection) * (rows_per_tok * cell + cap_h + 3 * pad)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    f_label, f_small = _font(15, True), _font(12)
    y = pad
    for name, rows in selection.items():
        draw.text((10, y + cell // 2), _shorten(draw, name, f_label, label_w - 16), font=f_label, fill=(20, 20, 20),
                  anchor="lm")
        for r_i, caption in enumerate(("original", "reconstruction", f"|diff| × {amplify:g}")):
            draw.text((10, y + r_i * cell + cell // 2 + 20), caption, font=f_small, fill=(110, 110, 110),
                      anchor="lm")
        for j, row in enumerate(rows):
            x = label_w + pad + j * (cell + pad)
            original = _original_for(report, report_dir, row["image_id"], row.get("resolution"))
            recon = report_dir / row["recon"] if row.get("recon") else None
            pair = []
            for src in (original, recon):
                if src is not None and src.is_file():
                    with Image.open(src) as im:
                        pair.append(im.convert("RGB"))
                else:
                    pair.append(None)
            for r_i, img in enumerate(pair):
                if img is None:
                    draw.rectangle([x, y + r_i * cell, x + cell - 1, y + (r_i + 1) * cell - 1], fill=(225, 225, 225))
                    draw.text((x + cell // 2, y + r_i * cell + cell // 2), "not saved", font=f_small,
                              fill=(120, 120, 120), anchor="mm")
                else:
                    canvas.paste(_fit(img, cell), (x, y + r_i * cell))
            if all(p is not None and p.size == pair[0].size for p in pair):
                diff = np.abs(np.asarray(pair[0], dtype=np.int16) - np.asarray(pair[1], dtype=np.int16))
                canvas.paste(_fit(Image.fromarray(np.clip(diff * amplify, 0, 255).astype(np.uint8)), cell),
                             (x, y + 2 * cell))
            value = row["metrics"][metric]
            text = f"{row['image_id']}: {value:.2f} dB" if metric == "psnr" else f"{row['image_id']}: {value:.3f}"
            draw.text((x + cell // 2, y + 3 * cell + cap_h // 2), _shorten(draw, text, f_small, cell), font=f_small,
                      fill=(60, 60, 60), anchor="mm")
        y += rows_per_tok * cell + cap_h + 3 * pad
    path = Path(path)
    canvas.save(path, compress_level=6)
    return path
