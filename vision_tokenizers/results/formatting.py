"""Number, time and cell formatting shared by the tables and the plots."""

from __future__ import annotations

import math
from collections.abc import Mapping

from vision_tokenizers.results.constants import METRICS


def _num(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    decimals = METRICS.get(metric, ("", "", 0, 4))[3]
    if metric == "bpp" and abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:,.{decimals}f}" if decimals == 0 else f"{value:.{decimals}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _missing_text(reason: str | None) -> str:
    return f"skipped ({reason})" if reason else "not measured"


def timing_facts(timing: Mapping[str, Mapping]) -> tuple[str | None, bool, str]:
    """(device, random weights?, batch sizes such as "8" or "8/4") of a tokenizer's encode and decode timings: the
    speed table's device and batch cells, in summary.md and on the terminal."""
    stages = [x for x in (timing.get("encode"), timing.get("decode")) if x]
    device = stages[0].get("device") if stages else None
    batch = "/".join(dict.fromkeys(str(x["batch_size"]) for x in stages)) or "–"
    return device or None, any(x.get("random_weights") for x in stages), batch


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds >= 1:
        return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _time_pm(t: dict) -> str:
    median, iqr = t["per_image_s"], t["iqr_per_image_s"]
    unit, scale = ("s", 1) if median >= 1 else ("ms", 1e3) if median >= 1e-3 else ("µs", 1e6)
    digits = max(0, 2 - int(math.floor(math.log10(max(median * scale, 1e-12)))))
    return f"{median * scale:.{digits}f} ± {iqr * scale:.{digits}f} {unit}"


class _Notes:
    """Long skip reasons as numbered notes under a table, so cells stay short: 'skipped (see note 1)'."""

    LIMIT = 60

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}
        self.pending: list[int] = []

    def cell(self, text: str, reason: str | None) -> str:
        if not reason or len(reason) <= self.LIMIT or not text.startswith("skipped ("):
            return _md(text)
        number = self.reasons.setdefault(reason, len(self.reasons) + 1)
        if number not in self.pending:
            self.pending.append(number)
        return f"skipped (see note {number})"

    def flush(self) -> list[str]:
        """The notes referenced since the last flush, as lines to put under the table."""
        by_number = {n: r for r, n in self.reasons.items()}
        lines = [f"- note {n}: {_md(by_number[n])}" for n in sorted(self.pending)]
        self.pending = []
        return [*lines, ""] if lines else []


def metric_cell(tok: dict, metric: str) -> str:
    """'mean ± std' (with n when it differs from the image count), or 'skipped (reason)' / 'not measured'."""
    if metric in tok["metrics"]:
        s = tok["metrics"][metric]
        if s["mean"] is None:
            return f"non-finite ({s.get('n_nonfinite', 0)} images)"
        text = _num(s["mean"], metric) + (f" ± {_num(s['std'], metric)}" if s["std"] is not None else "")
        if s.get("ci_low") is not None and metric != "bpp":  # bootstrap 95 % interval of the mean
            text += f" [{_num(s['ci_low'], metric)}, {_num(s['ci_high'], metric)}]"
        if s["n"] != tok["n_images"]:
            text += f" (n={s['n']})"
        return text
    if metric in tok["dataset_metrics"]:
        value = tok["dataset_metrics"][metric]
        if metric == "codebook_usage" and 0 <= value <= 1:
            return f"{value * 100:.2f} %"
        text = _num(value, metric)
        meta = tok["dataset_meta"]
        if metric == "kid" and tok["dataset_metrics"].get("kid_std") is not None and meta.get("kid_subsets") != 1:
            text += f" ± {_num(tok['dataset_metrics']['kid_std'], metric)}"
        if metric in ("fid", "kid"):
            n = meta.get("fid_n", meta.get("n"))
            text += f" (n={n})" if n is not None else ""
            if isinstance(n, int) and isinstance(meta.get("fid_dim"), int) and n < meta["fid_dim"]:
                text += " †"  # explained under the table: n below the feature dimension
        return text
    return _missing_text(tok["missing"].get(metric))
