"""Per-image statistics on disk and their exact reduction to dataset metrics (rFID, KID, codebook statistics).

Every image's Inception features (both sides) and token ids are kept in ``stats/<tokenizer>/<image id>.npz``, written
atomically before the image's record. A dataset number is then a function of the set of images alone, reduced in one
canonical order (sorted image ids): one run, a run resumed after a kill and merged shards give the same bits, and a
resumed run never reconstructs the images it already did. Per-shard FIDs are never averaged.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vision_tokenizers.results.reducer import CODEBOOK_PREFIX, StatisticsReducer

STATS_DIR = "stats"


def stats_relpath(tokenizer: str, image_id: str, config: str | None = None) -> str:
    """Where one image's statistics live; under the tokenizer's config id when known, so that a rerun with other
    settings killed between writing the file and its record can never leave an old row pointing at new numbers."""
    return f"{STATS_DIR}/{tokenizer}/{config}/{image_id}.npz" if config else f"{STATS_DIR}/{tokenizer}/{image_id}.npz"


def save_image_stats(report_dir: str | os.PathLike, relpath: str, arrays: Mapping[str, np.ndarray],
                     codebooks: Mapping[str, int] | None = None) -> str:
    """Write one image's statistics (uncompressed npz) atomically; returns `relpath`."""
    target = Path(report_dir) / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload.update({CODEBOOK_PREFIX + name: np.asarray(size, dtype=np.int64) for name, size in
                    (codebooks or {}).items()})
    with open(tmp, "wb") as f:
        np.savez(f, **payload)
    os.replace(tmp, target)
    return relpath


def load_image_stats(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One image's statistics; ValueError (one line) when the file is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"per-image statistics {path} unreadable ({type(exc).__name__}: {exc})") from exc


def readable_stats(path: str | os.PathLike, needed: set[str]) -> bool:
    """True when `path` holds every statistic in `needed` (the check a resumed run makes before reusing an image)."""
    try:
        return needed <= set(load_image_stats(path))
    except ValueError:
        return False


def reduce_statistics(per_image: Mapping[str, Mapping[str, np.ndarray]], *,
                      pixels_per_image: int | None = None) -> tuple[dict[str, float], dict[str, object]]:
    """Dataset metrics and their meta from {image id: statistics}, reduced in sorted-id order.

    rFID and KID when every image has both sides' features (FID needs >= 2 images); codebook usage, unique codes,
    entropy and perplexity of all ids, the per-position entropy (meta ``position_entropy``, shape
    ``token_grid``) and the measured bits per pixel (``bpp_measured``: entropy of the id histogram x tokens per image
    / pixels, the rate an ideal entropy coder of independent ids would reach) when every image has ids; the same
    statistics of de-tokenizer codes (``aux_<name>``) as ``<name>_<statistic>``.
    """
    reducer = StatisticsReducer(len(per_image), pixels_per_image=pixels_per_image)
    for image_id in sorted(per_image):
        reducer.add(image_id, per_image[image_id])
    return reducer.result()


def reduce_stored_statistics(report_dir: str | os.PathLike, relpaths: Mapping[str, str], *,
                             pixels_per_image: int | None = None) -> tuple[dict[str, float], dict[str, object]]:
    """`reduce_statistics` of the files {image id: relpath} under `report_dir`, read one at a time (sorted ids): the
    memory does not grow with the images' token ids."""
    reducer = StatisticsReducer(len(relpaths), pixels_per_image=pixels_per_image)
    for image_id in sorted(relpaths):
        reducer.add(image_id, load_image_stats(Path(report_dir) / relpaths[image_id]))
    return reducer.result()
