"""A deterministic folder of COCO-sized photo-like JPEGs for measuring the image path (`vtok perf`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 640, 480  # a typical COCO val2017 photo
QUALITY = 90


def default_cache() -> Path:
    """$VTOK_CACHE/perf, else the system temp folder: generated files are reused between runs."""
    root = os.environ.get("VTOK_CACHE")
    return Path(root) / "perf" if root else Path(tempfile.gettempdir()) / "vtok-perf"


def photo(seed: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    """Smooth colour fields plus grain: decodes like a photo (flat synthetic colours would compress and decode
    unrealistically fast). The same seed gives the same pixels."""
    rng = np.random.default_rng(seed)
    smooth = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    grain = rng.integers(-12, 13, (size[1], size[0], 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(smooth, dtype=np.int16) + grain, 0, 255).astype(np.uint8))


def generated_folder(count: int, root: Path | None = None, seed: int = 0) -> Path:
    """`root/coco_like_..._seed<seed>` holding at least `count` JPEGs img00000.jpg ... (seed + k for image k); files
    already there are kept (a folder of 2,000 serves every smaller count: `--num-images N` takes the first N)."""
    folder = (root or default_cache()) / f"coco_like_{WIDTH}x{HEIGHT}_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        path = folder / f"img{k:05d}.jpg"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # never a half-written JPEG under its name
            photo(seed + k).save(tmp, format="JPEG", quality=QUALITY)
            os.replace(tmp, path)
    return folder
