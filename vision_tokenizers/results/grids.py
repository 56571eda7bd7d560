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
