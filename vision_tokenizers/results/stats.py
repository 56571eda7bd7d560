"""Per-image statistics on disk and their exact reduction to dataset metrics (rFID, KID, codebook statistics).

Every image's Inception features (both sides) and token ids are kept in ``stats/<tokenizer>/<image id>.npz``, written
atomically before the image's record. A dataset number is then a function of the set of images alone, reduced in one
canonical order (sorted image ids): one run, a run resumed after a kill and merged shards give the same bits, and a
resumed run never reconstructs the images it already did. Per-shard FIDs are never averaged.
"""

from __future__ import annotations

import math
import os
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

STATS_DIR = "stats"
CODEBOOK_PREFIX = "codebook_size__"  # 0-d arrays holding the codebook size of an id statistic


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


def _stack(per_image: Mapping[str, Mapping[str, np.ndarray]], ids: list[str], key: str) -> np.ndarray | None:
    if not ids or any(key not in per_image[i] for i in ids):
        return None
    return np.stack([per_image[i][key] for i in ids])


def reduce_statistics(per_image: Mapping[str, Mapping[str, np.ndarray]], *,
                      pixels_per_image: int | None = None) -> tuple[dict[str, float], dict[str, object]]:
    """Dataset metrics and their meta from {image id: statistics}, reduced in sorted-id order.

    rFID and KID when every image has both sides' features (FID needs >= 2 images); codebook usage, unique codes,
    entropy and perplexity of all ids, the per-position entropy (meta ``position_entropy``, shape
    ``token_grid``) and the measured bits per pixel (``bpp_measured``: entropy of the id histogram x tokens per image
    / pixels, the rate an ideal entropy coder of independent ids would reach) when every image has ids; the same
    statistics of de-tokenizer codes (``aux_<name>``) as ``<name>_<statistic>``.
    """
    import torch

    from vision_tokenizers import metrics as M

    ids = sorted(per_image)
    metrics: dict[str, float] = {}
    meta: dict[str, object] = {"stats_n": len(ids)}
    ref, rec = _stack(per_image, ids, "fid_ref"), _stack(per_image, ids, "fid_rec")
    if ref is not None and rec is not None:
        if len(ids) >= 2:
            ref_t, rec_t = torch.from_numpy(ref), torch.from_numpy(rec)
            metrics["fid"] = M.fid_from_features(ref_t, rec_t)
            metrics["kid"], metrics["kid_std"], subset = M.kid_from_features(ref_t, rec_t)
            meta.update(fid_n=len(ids), fid_dim=int(ref.shape[1]), kid_subset_size=subset,
                        kid_subsets=1 if subset == len(ids) else M.KID_SUBSETS, kid_seed=M.KID_SEED)
        else:
            meta["fid_note"] = f"rFID and KID need at least 2 images; this set has {len(ids)}"
    names = sorted({k for stats in per_image.values() for k in stats if k == "ids" or k.startswith("aux_")})
    for name in names:
        stacked = _stack(per_image, ids, name)
        size_key = CODEBOOK_PREFIX + name
        if stacked is None or size_key not in per_image[ids[0]]:
            continue
        size = int(per_image[ids[0]][size_key])
        codes = torch.from_numpy(stacked.astype(np.int64))
        stats = M.token_statistics(codes, size)
        if name == "ids":
            metrics.update(stats)
            entropy = M.position_entropy(codes)
            meta.update(position_entropy=[round(abs(float(v)), 6) for v in entropy.flatten()],
                        token_grid=list(entropy.shape), position_entropy_bound=math.log2(min(len(ids), size)))
            if pixels_per_image:
                metrics["bpp_measured"] = stats["entropy_bits"] * codes[0].numel() / pixels_per_image
        else:
            metrics.update({f"{name[len('aux_'):]}_{k}": v for k, v in stats.items()})
    return metrics, meta


def load_statistics(report_dir: str | os.PathLike, relpaths: Mapping[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """{image id: statistics} for {image id: relpath} under `report_dir`."""
    return {image_id: load_image_stats(Path(report_dir) / rel) for image_id, rel in relpaths.items()}
