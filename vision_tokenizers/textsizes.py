"""The built-in text set `--dataset textsizes`: deterministic 512 x 512 pages of words at known heights.

Each page carries one row of words per height in `HEIGHTS` (6 to 48 px at 512 px), drawn in DejaVu Sans (the font
file matplotlib ships, rendered by Pillow's FreeType with the basic layout engine), on plain paper or on a photo
bundled with scikit-image (the `samples` photos, centre-cropped to 512 px; black or white ink, whichever contrasts
more with the photo under the word). Words come from the fixed list `WORDS`, shuffled per page (no word twice on a
page) with `random.Random(seed).random()` only (the part of Python's generator that is guaranteed not to change).
The annotations are generated with the pixels: a word's box spans its advance width (widened to any ink past it) by
the font's line height (ascender to descender), so a box's height is exactly its row's height. Nothing is
downloaded. `--dataset textsizes` renders the pages once into a cache folder (`cached_folder`: PNG, lossless, beside
their `annotations.json`) and is then an annotated folder like any other: streaming, resume and shards work unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vision_tokenizers.text_fidelity import ANNOTATIONS_FILE, Annotations, TextBox, annotations_sha256

NAME = "textsizes"
SIZE = 512
HEIGHTS = (6, 7, 8, 10, 12, 14, 16, 20, 24, 32, 40, 48)
WORDS_PER_ROW = 2
MARGIN = 12
PAPERS = {"paper": (250, 248, 240), "paper_grey": (222, 222, 218)}
INK = (20, 20, 24)
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg")
BACKGROUNDS = (*PAPERS, *(Path(p).stem for p in PHOTOS))
WORDS = (
    "harbour", "Quantum", "lettering", "2048", "jumpy", "violet", "Marble", "sixteen", "kernel", "Oxford",
    "glimpse", "rhythm", "Pixel", "yellow", "brisk", "Zephyr", "candle", "orbit", "Waltz", "fjord", "meadow",
    "Tokyo", "quiet", "bronze", "Lantern", "frog", "delta", "Summit", "wizard", "cobalt", "ninety", "Basket",
    "vortex", "plum", "Granite", "echo", "saffron", "Kettle", "morning", "1987", "puzzle", "Harvest", "lyric",
    "ember", "Falcon", "tundra", "jigsaw", "Vector", "hazel", "quartz", "Dynamo", "sparrow", "willow", "355",
)


def font_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.lru_cache(maxsize=1)
def _line_metrics() -> tuple[int, int, int]:
    """DejaVu Sans' (ascender, descender, units per em) from the font file (matplotlib's FT2Font)."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(font_path()))
    return font.ascender, -font.descender, font.units_per_EM


@functools.cache
def _font(height: int) -> ImageFont.FreeTypeFont:
    """The font at the em size whose line height (ascender + descender) is `height` px."""
    ascender, descender, em = _line_metrics()
    return ImageFont.truetype(str(font_path()), size=height * em / (ascender + descender),
                              layout_engine=ImageFont.Layout.BASIC)


@dataclass(frozen=True)
class Page:
    image_id: str
    image: Image.Image
    boxes: tuple[TextBox, ...]


def _background(name: str) -> Image.Image:
    if name in PAPERS:
        return Image.new("RGB", (SIZE, SIZE), PAPERS[name])
    import skimage.data

    from vision_tokenizers.images import load_image, prepare_image

    photo = next(p for p in PHOTOS if Path(p).stem == name)
    return prepare_image(load_image(Path(skimage.data.__file__).parent / photo), SIZE)


def _ink(background: np.ndarray, box: tuple[float, float, float, float]) -> tuple[int, int, int]:
    """Black (dark) ink on light ground, white on dark: by the mean luma under the box."""
    x0, y0, x1, y1 = (int(v) for v in (box[0], box[1], box[2] + 1, box[3] + 1))
    luma = background[max(y0, 0):y1, max(x0, 0):x1].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return INK if luma.mean() >= 110 else (250, 250, 250)


def render_page(index: int) -> Page:
    """Page `index` (0 .. len(BACKGROUNDS) - 1): the same pixels and boxes on every call and machine (for one Pillow
    and FreeType build; the dataset hash in the protocol names the pixels)."""
    name = BACKGROUNDS[index]
    rng = random.Random(7919 * (index + 1))
    image = _background(name)
    ground = np.asarray(image).copy()
    draw = ImageDraw.Draw(image)
    ascender, descender, _ = _line_metrics()
    heights = HEIGHTS if index % 2 == 0 else HEIGHTS[::-1]  # small text at the top of half the pages
    gap = (SIZE - sum(heights)) / (len(heights) + 1)
    top = gap
    order = list(WORDS)  # Fisher-Yates on rng.random(): no word twice on a page
    for i in range(len(order) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    boxes: list[TextBox] = []
    for height in heights:
        font = _font(height)
        above = height * ascender / (ascender + descender)
        baseline = round(top + above)
        x = MARGIN + int(rng.random() * 24)
        for _ in range(WORDS_PER_ROW):
            # the next unused word that fits before the right margin
            fits = next((w for w in order if x + max(font.getlength(w), font.getbbox(w, anchor="ls")[2])
                         <= SIZE - MARGIN), None)
            if fits is None:
                break
            order.remove(fits)
            word, advance = fits, font.getlength(fits)
            ink = font.getbbox(word, anchor="ls")  # a glyph may reach past the advance (the hook of a leading j)
            box = (x + min(ink[0], 0.0), baseline - above, x + max(advance, ink[2]), baseline - above + height)
            draw.text((x, baseline), word, font=font, fill=_ink(ground, box), anchor="ls")
            boxes.append(TextBox(word, box))
            x = int(x + advance + max(height, 10) + rng.random() * 2 * height)
        top += height + gap
    return Page(f"{NAME}_{index:02d}_{name}", image, tuple(boxes))


@functools.lru_cache(maxsize=1)
def pages() -> tuple[Page, ...]:
    return tuple(render_page(i) for i in range(len(BACKGROUNDS)))


def annotations() -> Annotations:
    """The pages' boxes as the benchmark's annotations (generated with the pixels, never read from a file)."""
    rendered = pages()
    boxes = {p.image_id: list(p.boxes) for p in rendered}
    return Annotations(boxes, [], annotations_sha256(boxes), {p.image_id: p.image.size for p in rendered})


def write_pages(folder: str | os.PathLike) -> list[Path]:
    """Save every page as `<image id>.png` in `folder` (lossless: a loader decodes exactly these pixels)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for page in pages():
        path = folder / f"{page.image_id}.png"
        page.image.save(path)
        out.append(path)
    return out


def dataset_sha256(rendered: tuple[Page, ...] | None = None) -> str:
    """The set's identity: sha256 of one "<id>\\t<sha256 of its RGB pixels>" line per page, then of the boxes."""
    digest = hashlib.sha256()
    rendered = pages() if rendered is None else rendered
    for page in rendered:
        pixels = hashlib.sha256(np.asarray(page.image).tobytes()).hexdigest()
        digest.update(f"{page.image_id}\t{pixels}\n".encode())
    digest.update(annotations_sha256({p.image_id: p.boxes for p in rendered}).encode())
    return digest.hexdigest()


def cache_root() -> Path:
    """$VTOK_CACHE, else ~/.cache/vtok (the folder weights.cached_sha256 uses too)."""
    return Path(os.environ.get("VTOK_CACHE") or Path.home() / ".cache" / "vtok")


def annotations_json(rendered: tuple[Page, ...] | None = None) -> dict[str, list[dict]]:
    """The pages' boxes in the `annotations.json` format: {"<id>.png": [{"text", "box"}, ...]}."""
    rendered = pages() if rendered is None else rendered
    return {f"{p.image_id}.png": [{"text": b.text, "box": list(b.box)} for b in p.boxes] for p in rendered}


def _folder_holds(folder: Path, rendered: tuple[Page, ...]) -> bool:
    """Whether `folder` holds exactly these pages (decoded pixels) and their annotations."""
    try:
        if json.loads((folder / ANNOTATIONS_FILE).read_text(encoding="utf-8")) != annotations_json(rendered):
            return False
        for page in rendered:
            with Image.open(folder / f"{page.image_id}.png") as im:
                if not np.array_equal(np.asarray(im.convert("RGB")), np.asarray(page.image)):
                    return False
    except (OSError, ValueError):
        return False
    return True


def cached_folder(root: str | os.PathLike | None = None) -> Path:
    """`<root>/textsizes/<first 16 hex of dataset_sha256>/`: the pages as PNG and their annotations.json, rendered
    here when missing or not these pixels, written to a temporary folder first and renamed into place (a killed or
    concurrent run never leaves a half-written set that looks complete)."""
    rendered = pages()
    folder = Path(root or cache_root()) / NAME / dataset_sha256(rendered)[:16]
    if _folder_holds(folder, rendered):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_pages(tmp)
        (tmp / ANNOTATIONS_FILE).write_text(json.dumps(annotations_json(rendered), indent=1), encoding="utf-8")
        if folder.exists():  # damaged: replaced whole
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process renamed its (identical) copy into place first
            if not _folder_holds(folder, rendered):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
