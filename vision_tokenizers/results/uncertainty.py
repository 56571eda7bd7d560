"""Uncertainty of the reported means: seeded bootstrap confidence intervals over images.

The values of one tokenizer and metric are taken in sorted image-id order before resampling, so one run, a resumed
run and merged shards give the same interval; the generator is seeded (`BOOTSTRAP_SEED`), so a rebuild does too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 1000
LEVEL = 0.95
_CHUNK = 100  # resamples drawn at once: bounded memory on large image sets


def bootstrap_ci(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, *, seed: int = BOOTSTRAP_SEED,
                 level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `values` (finite numbers, in a canonical order); None with fewer
    than 2 values or no resamples."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    means = np.concatenate([x[rng.integers(0, x.size, size=(min(_CHUNK, resamples - start), x.size))].mean(axis=1)
                            for start in range(0, resamples, _CHUNK)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def add_intervals(report: dict, resamples: int = BOOTSTRAP_RESAMPLES) -> None:
    """Add ``ci_low`` / ``ci_high`` (and ``ci_level``, ``ci_resamples``) to every per-image metric's statistics in
    `report["tokenizers"]`, from `report["images"]`."""
    by_tokenizer: dict[str, list[Mapping]] = {}
    for row in report["images"]:
        by_tokenizer.setdefault(row["tokenizer"], []).append(row)
    for name, tok in report["tokenizers"].items():
        rows = sorted(by_tokenizer.get(name, []), key=lambda r: str(r["image_id"]))
        for metric, stats in tok["metrics"].items():
            values = [r["metrics"][metric] for r in rows if isinstance(r["metrics"].get(metric), (int, float))
                      and math.isfinite(r["metrics"][metric])]
            ci = bootstrap_ci(values, resamples)
            if ci is not None:
                stats.update(ci_low=ci[0], ci_high=ci[1], ci_level=LEVEL, ci_resamples=resamples)
    report["bootstrap"] = {"resamples": resamples, "seed": BOOTSTRAP_SEED, "level": LEVEL,
                           "over": "images (sorted ids), percentile interval of the mean"}


def add_seed_spread(report: dict, records: Sequence[Mapping]) -> None:
    """For tokenizers decoded with several run seeds (``seed_image`` records of --seeds K): per metric, the
    between-seed spread (root mean over images of the std across an image's seeds) next to the between-image spread
    (std across images of each image's mean over its seeds), as ``report["tokenizers"][name]["seed_spread"]``."""
    rows = {(r["tokenizer"], r["image_id"]): r for r in report["images"]}
    main = {key: r["metrics"] for key, r in rows.items()}
    extra: dict[tuple[str, str], dict[int, Mapping]] = {}
    for rec in records:
        key = (str(rec.get("tokenizer")), str(rec.get("image_id")))
        # only extra decodes made under the main row's protocol and config (settings, weights, main seed)
        if rec.get("type") == "seed_image" and key in rows and (rec.get("protocol"), rec.get("config")) == (
                rows[key].get("protocol"), rows[key].get("config")):
            extra.setdefault(key, {})[int(rec["run_seed"])] = rec.get("metrics") or {}
    for name, tok in report["tokenizers"].items():
        keys = sorted(k for k in extra if k[0] == name and k in main)
        if not keys:
            continue
        spread = {}
        for metric in (m for m in tok["metrics"] if m != "bpp"):  # bits per pixel does not depend on the seed
            per_image = []
            for key in keys:
                values = [main[key].get(metric)] + [extra[key][s].get(metric) for s in sorted(extra[key])]
                values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
                if len(values) >= 2:
                    per_image.append(values)
            if len(per_image) < 2:
                continue
            seed_var = [float(np.var(v, ddof=1)) for v in per_image]
            spread[metric] = {"between_seed_std": math.sqrt(sum(seed_var) / len(seed_var)),
                              "between_image_std": float(np.std([np.mean(v) for v in per_image], ddof=1)),
                              "n_images": len(per_image)}
        tok["seed_spread"] = {"seeds": 1 + max(len(extra[k]) for k in keys), "metrics": spread}
