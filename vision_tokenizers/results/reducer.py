"""The streaming reduction of per-image statistics to dataset metrics (rFID, KID, codebook statistics).

Images are added one at a time in sorted-id order, so a run, its resumption and merged shards give the same bits,
and memory does not grow with the token ids of the images seen: the ids go into a histogram as they arrive, the
per-position entropy is counted in a dense (positions x codebook) histogram or, when that is the larger of the two,
in the ids kept in their stored dtype. Only KID keeps every image's Inception features (float32, 16 KB an image):
its random subsets need them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

CODEBOOK_PREFIX = "codebook_size__"  # 0-d arrays holding the codebook size of an id statistic
FEATURE_KEYS = ("fid_ref", "fid_rec")


class _Codes:
    """One id statistic (``ids`` or a de-tokenizer's ``aux_<name>``) of up to `n` images: pooled counts, and the
    per-position counts when `positions`."""

    def __init__(self, name: str, n: int, first: np.ndarray, size: int, positions: bool) -> None:
        from vision_tokenizers import metrics as M

        self.name, self.shape, self.size, self.added = name, first.shape, size, 0
        self.pooled = M.TokenStatistics(size)
        self.histogram: np.ndarray | None = None
        self.rows: np.ndarray | None = None
        if positions:
            tokens = first.size
            if tokens * size * 4 <= n * tokens * first.dtype.itemsize:
                self.histogram = np.zeros((tokens, size), dtype=np.int32)
            else:
                self.rows = np.empty((n, tokens), dtype=first.dtype)

    def add(self, image_id: str, codes: np.ndarray) -> None:
        import torch

        if codes.shape != self.shape:
            raise ValueError(f"{self.name} of {image_id}: shape {codes.shape}, other images {self.shape}")
        try:  # the id checks (integer, within the codebook) come first: a bad id never reaches the histogram
            self.pooled.update(torch.from_numpy(codes))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{self.name} of {image_id}: {exc}") from None
        flat = codes.reshape(-1).astype(np.intp, copy=False)
        if self.histogram is not None:
            self.histogram[np.arange(flat.size), flat] += 1  # one id per position: no repeated index
        elif self.rows is not None:
            self.rows[self.added] = codes.reshape(-1)
        self.added += 1

    def position_entropy(self) -> np.ndarray:
        """Entropy in bits of the id at each position, from each position's counts in id order (the same numbers
        `metrics.position_entropy` gives for the stacked ids)."""
        import torch

        from vision_tokenizers import metrics as M

        if self.histogram is None:
            return M.position_entropy(torch.from_numpy(self.rows[:self.added])).numpy().reshape(self.shape)
        out = np.empty(len(self.histogram), dtype=np.float64)
        for position, row in enumerate(self.histogram):
            out[position] = float(M.entropy_of_counts(torch.from_numpy(row[row > 0].astype(np.int64))))
        return out.reshape(self.shape)


class StatisticsReducer:
    """Dataset metrics from `n` images' statistics added in sorted-id order (see `stats.reduce_statistics`)."""

    def __init__(self, n: int, *, pixels_per_image: int | None = None) -> None:
        self.n, self.pixels_per_image = n, pixels_per_image
        self.added = 0
        self.last_id: str | None = None
        self.features: dict[str, np.ndarray] = {}
        self.feature_rows = dict.fromkeys(FEATURE_KEYS, 0)
        self.codes: dict[str, _Codes] = {}
        self.incomplete: set[str] = set()  # id statistics some image lacks (or lacks the codebook size of)

    def add(self, image_id: str, stats: Mapping[str, np.ndarray]) -> None:
        if self.last_id is not None and image_id <= self.last_id:
            raise ValueError(f"statistics must come in sorted image-id order: {image_id!r} after {self.last_id!r}")
        if self.added == self.n:
            raise ValueError(f"more than the {self.n} images announced: {image_id!r}")
        for key in FEATURE_KEYS:
            if key in stats and self.feature_rows[key] == self.added:
                value = np.asarray(stats[key]).reshape(-1)
                if key not in self.features:
                    self.features[key] = np.empty((self.n, value.size), dtype=value.dtype)
                if value.size != self.features[key].shape[1]:
                    raise ValueError(f"{key} of {image_id}: {value.size} features, other images "
                                     f"{self.features[key].shape[1]}")
                self.features[key][self.added] = value
                self.feature_rows[key] += 1
        names = {k for k in stats if k == "ids" or k.startswith("aux_")} | set(self.codes)
        for name in sorted(names - self.incomplete):
            size_key = CODEBOOK_PREFIX + name
            if name not in stats or size_key not in stats or (name not in self.codes and self.added):
                self.incomplete.add(name)
                self.codes.pop(name, None)
                continue
            codes = np.asarray(stats[name])
            if name not in self.codes:
                self.codes[name] = _Codes(name, self.n, codes, int(stats[size_key]), positions=name == "ids")
            self.codes[name].add(image_id, codes)
        self.last_id = image_id
        self.added += 1

    def result(self) -> tuple[dict[str, float], dict[str, object]]:
        import torch

        from vision_tokenizers import metrics as M

        if self.added != self.n:
            raise ValueError(f"{self.added} of the {self.n} announced images were added")
        metrics: dict[str, float] = {}
        meta: dict[str, object] = {"stats_n": self.n}
        if self.n and all(self.feature_rows[key] == self.n for key in FEATURE_KEYS):
            if self.n >= 2:
                ref, rec = (torch.from_numpy(self.features[key]) for key in FEATURE_KEYS)
                metrics["fid"] = M.fid_from_features(ref, rec)
                metrics["kid"], metrics["kid_std"], subset = M.kid_from_features(ref, rec)
                meta.update(fid_n=self.n, fid_dim=int(ref.shape[1]), kid_subset_size=subset,
                            kid_subsets=1 if subset == self.n else M.KID_SUBSETS, kid_seed=M.KID_SEED)
            else:
                meta["fid_note"] = f"rFID and KID need at least 2 images; this set has {self.n}"
        for name, codes in sorted(self.codes.items()):
            stats = codes.pooled.compute()
            if name != "ids":
                metrics.update({f"{name[len('aux_'):]}_{k}": v for k, v in stats.items()})
                continue
            metrics.update(stats)
            entropy = codes.position_entropy()
            meta.update(position_entropy=[round(abs(float(v)), 6) for v in entropy.flatten()],
                        token_grid=list(entropy.shape), position_entropy_bound=math.log2(min(self.n, codes.size)))
            if self.pixels_per_image:
                metrics["bpp_measured"] = stats["entropy_bits"] * int(np.prod(codes.shape)) / self.pixels_per_image
        return metrics, meta
