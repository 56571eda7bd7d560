"""summary.png: the matplotlib summary plot (metric bars, rFID, timings, quality vs. rate)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from vision_tokenizers.results.constants import STAGES
from vision_tokenizers.results.formatting import _num, fmt_time


def _colors(names: Iterable[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _common_reason(toks: dict, metric: str) -> str | None:
    """The skip reason shared by every tokenizer that ran (None if they differ or there is none)."""
    reasons = {t["missing"].get(metric) for t in toks.values() if t["status"] != "skipped"}
    return reasons.pop() if len(reasons) == 1 else None


def _not_measured(ax, title: str, reason: str | None) -> None:
    import textwrap

    text = f"{title}\n" + ("skipped: " + textwrap.shorten(reason, 140, placeholder=" …") if reason
                          else "not measured")
    text = "\n".join(textwrap.fill(line, 52) for line in text.split("\n"))
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.45",
            style="italic", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_color("0.85")


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)


def _bar_panel(ax, report: dict, metric: str, title: str, colors: dict, labels: bool) -> bool:
    """Horizontal bars of one metric per tokenizer (± std, published markers); False when nothing to draw."""
    toks = report["tokenizers"]
    names = list(toks)
    if metric == "fid":
        values = {n: toks[n]["dataset_metrics"].get("fid") for n in names}
        errs = {n: None for n in names}
    else:
        values = {n: toks[n]["metrics"].get(metric, {}).get("mean") for n in names}
        errs = {n: toks[n]["metrics"].get(metric, {}).get("std") for n in names}
    published = {n: (toks[n]["published"] or {}).get(metric) for n in names}
    if not any(v is not None for v in values.values()):
        _not_measured(ax, title, _common_reason(toks, metric))
        return False
    y = range(len(names))
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    top = max([*finite, *(v + (errs[n] or 0) for n, v in values.items() if v is not None and math.isfinite(v)),
               *(p for p in published.values() if p is not None)], default=1.0)
    for i, n in enumerate(names):
        v = values[n]
        if v is None or not math.isfinite(v):
            reason = toks[n]["missing"].get(metric)
            ax.text(0.01 * top, i, "skipped" if reason else "not measured", va="center", fontsize=8.5,
                    color="0.45", style="italic")
            continue
        ax.barh(i, v, xerr=errs[n], color=colors[n], height=0.62, capsize=3,
                error_kw={"elinewidth": 1, "ecolor": "0.25"})
        ax.text(v + (errs[n] or 0) + 0.015 * top, i, _num(v, metric), va="center", fontsize=8.5, zorder=6,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.6})
    pub = [(i, published[n]) for i, n in enumerate(names) if published[n] is not None]
    if pub:
        ax.scatter([p for _, p in pub], [i for i, _ in pub], marker="D", s=28, color="black", zorder=5,
                   label="published")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.1,
                  handletextpad=0.2)
    ax.set_yticks(list(y), [n for n in names] if labels else [""] * len(names), fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.22)
    ax.set_title(title, fontsize=11, fontweight="bold", loc="left")
    _style(ax)
    return True


def _rate_panel(ax, report: dict, colors: dict) -> None:
    toks = report["tokenizers"]
    pts = [(n, t["bpp"], t["metrics"]["psnr"]["mean"], t["metrics"]["psnr"]["std"]) for n, t in toks.items()
           if t["bpp"] and "psnr" in t["metrics"] and t["metrics"]["psnr"]["mean"] is not None]
    if not pts:
        _not_measured(ax, "PSNR vs. bits per pixel", _common_reason(toks, "psnr"))
        return
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ys = [p[2] for p in pts]
    span = (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for n, x, y, e in sorted(pts, key=lambda p: -p[2]):
        ax.errorbar(x, y, yerr=e, fmt="o", color=colors[n], ms=8, capsize=3, elinewidth=1, mec="white", mew=0.8)
        label_y = y
        while any(abs(label_y - py) < 0.06 * span and abs(math.log10(x / px)) < 0.35 for px, py in placed):
            label_y -= 0.06 * span  # nudge down past labels it would overlap
        placed.append((x, label_y))
        ax.annotate(n, (x, y), xytext=(x * 1.13, label_y), textcoords="data", fontsize=8, color="0.2", va="center",
                    ha="left", xycoords="data", annotation_clip=False,
                    **({"arrowprops": {"arrowstyle": "-", "color": "0.6", "lw": 0.6}} if label_y != y else {}))
    ax.set_xscale("log")
    xs = [p[1] for p in pts]
    ax.set_xlim(min(xs) / 2.5, max(xs) * 4)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per pixel (log scale)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Quality vs. rate  (↖ better)", fontsize=11, fontweight="bold", loc="left")
    ax.grid(color="0.9", linewidth=0.8, which="both")
    ax.spines[["top", "right"]].set_visible(False)


def _time_panel(ax, report: dict, labels: bool) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    toks = report["tokenizers"]
    names = list(toks)
    if not any(t["timing"] for t in toks.values()):
        _not_measured(ax, "Encode / decode time", _common_reason(toks, "encode"))
        return
    h = 0.38
    stage_colors = {"encode": "#4C72B0", "decode": "#DD8452"}
    values = [t["timing"][s]["per_image_s"] for t in toks.values() for s in STAGES if s in t["timing"]]
    lo, hi = min(values), max(values)
    for i, n in enumerate(names):
        for j, stage in enumerate(STAGES):
            y = i + (j - 0.5) * h
            t = toks[n]["timing"].get(stage)
            if not t:
                text = "skipped" if toks[n]["missing"].get(stage) else "not measured"
                ax.text(lo / 2.5, y, text, va="center", fontsize=7.5, color="0.45", style="italic")
                continue
            v, iqr = t["per_image_s"], t["iqr_per_image_s"]
            ax.barh(y, v, height=h * 0.92, color=stage_colors[stage], label=stage,
                    xerr=[[min(iqr / 2, v * 0.99)], [iqr / 2]], capsize=2,
                    error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
            ax.text(v * 1.25 + iqr / 2, y, fmt_time(v), va="center", fontsize=7.5)
    ax.set_xscale("log")
    ax.set_xlim(lo / 3, hi * 12)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_time(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow span would otherwise label every minor tick
    ax.set_yticks(range(len(names)), names if labels else [""] * len(names), fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
              ncols=2, borderaxespad=0.1)
    ax.set_xlabel("time per image, median ± IQR (log scale)")
    ax.set_title("Time per image  ↓", fontsize=11, fontweight="bold", loc="left")
    _style(ax)


def drawn_tokenizers(report: dict) -> tuple[dict, str | None]:
    """The tokenizers summary.png draws (those that produced numbers: images, dataset metrics or timings) and one
    footnote line naming the others (None when every tokenizer is drawn)."""
    toks = report["tokenizers"]
    drawn = {name: t for name, t in toks.items() if t["n_images"] or t["dataset_metrics"] or t["timing"]}
    groups: dict[str, list[str]] = {}
    for name, t in toks.items():
        if name not in drawn:
            why = "skipped" if t["status"] == "skipped" else "failed" if t.get("failed_images") else "no results"
            groups.setdefault(why, []).append(name)
    if not groups:
        return drawn, None
    return drawn, "Not shown, no numbers (reasons in summary.md): " + "; ".join(
        f"{why} {', '.join(names)}" for why, names in groups.items()) + "."


def plot_summary(report: dict, path: str | os.PathLike) -> Path:
    """summary.png: PSNR / SSIM / LPIPS bars (± std, published markers), quality vs. bpp, rFID, timings; only the
    tokenizers that produced numbers, the others named in a footnote."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    toks, not_shown = drawn_tokenizers(report)
    report = {**report, "tokenizers": toks}
    names = list(toks)
    colors = _colors(names)
    height = 7.2 + 0.32 * max(len(names) - 4, 0) * 2
    fig = Figure(figsize=(17, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3, gridspec_kw={"width_ratios": [1.35, 1, 1]})
    if not names:
        for ax in axes.flat:
            _not_measured(ax, "no results", None)
    else:
        # bar panels of a row share the tokenizer order; the first drawn one of each row carries the names
        labeled = False
        for ax, metric, title in ((axes[0, 0], "psnr", "PSNR (dB)  ↑"), (axes[0, 1], "ssim", "SSIM  ↑"),
                                  (axes[0, 2], "lpips", "LPIPS (AlexNet)  ↓")):
            labeled |= _bar_panel(ax, report, metric, title, colors, labels=not labeled)
        labeled = _bar_panel(axes[1, 0], report, "fid", "rFID  ↓" + _fid_note(report), colors, labels=True)
        _time_panel(axes[1, 1], report, labels=not labeled)
        _rate_panel(axes[1, 2], report, colors)
    run = report["runs"][-1] if report["runs"] else {}
    opts = run.get("options") or {}
    n_images = max((t["n_images"] for t in toks.values()), default=0)
    sub = [f"{n_images} images" + (f" ({opts['dataset']})" if opts.get("dataset") else "")]
    sub += [f"device {opts['device']}"] if opts.get("device") else []
    sub += [str(run["started"])[:16].replace("T", " ")] if run.get("started") else []
    fig.suptitle("vtok-bench: image tokenizer reconstruction benchmark   ·   " + "  ·  ".join(sub),
                 fontsize=14, fontweight="bold")
    published = any(t["published"] for t in toks.values())
    fig.text(0.5, -0.005, "Bars: mean over images ± std"
             + ("; ◆ published numbers (ldj7672/Vision-Tokenizer-Analysis)" if published else "")
             + ". Metrics on 8-bit images at each tokenizer's resolution; PSNR = mean of per-image PSNR."
             + (f"\n{not_shown}" if not_shown else ""), ha="center", va="top", fontsize=8.5, color="0.35")
    path = Path(path)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return path


def _fid_note(report: dict) -> str:
    metas = [t["dataset_meta"] for t in report["tokenizers"].values() if "fid" in t["dataset_metrics"]]
    ns = {m.get("fid_n", m.get("n")) for m in metas if m.get("fid_n", m.get("n")) is not None}
    return f"   (n={ns.pop()})" if len(ns) == 1 else ""


def sweep_series(report: dict) -> dict[tuple[str, str], list[tuple[float, str]]]:
    """(spec name, setting) -> [(value, result name)] for tokenizers run at several values of one setting."""
    series: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for name, tok in report["tokenizers"].items():
        sweep = (tok.get("spec") or {}).get("sweep")
        if sweep and isinstance(sweep.get("value"), (int, float)):
            base = (tok.get("spec") or {}).get("spec_name", name)
            series.setdefault((base, sweep["key"]), []).append((float(sweep["value"]), name))
    return {k: sorted(v) for k, v in series.items() if len(v) > 1}


def plot_sweeps(report: dict, path: str | os.PathLike) -> Path | None:
    """Quality (PSNR, SSIM, LPIPS, rFID) against a swept generation setting (e.g. diffusion steps); None if none."""
    series = sweep_series(report)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"), ("fid", "rFID ↓"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), constrained_layout=True)
    colors = _colors(base for base, _ in series)
    for ax, (metric, title) in zip(axes, panels, strict=True):
        drawn = False
        for (base, key), points in series.items():
            xs, ys, errs = [], [], []
            for value, name in points:
                tok = report["tokenizers"][name]
                stat = tok["dataset_metrics"].get("fid") if metric == "fid" else \
                    tok["metrics"].get(metric, {}).get("mean")
                if stat is None:
                    continue
                xs.append(value)
                ys.append(stat)
                errs.append(0.0 if metric == "fid" else tok["metrics"][metric].get("std") or 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=colors[base], label=f"{base} ({key})")
                drawn = True
        if not drawn:
            _not_measured(ax, title, _common_reason(report["tokenizers"], metric))
            continue
        ax.set_title(title)
        ax.set_xlabel(" / ".join(sorted({key for _, key in series})))
        _style(ax)
        ax.grid(axis="y", color="0.9", linewidth=0.8)
    axes[0].legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_position_entropy(report: dict, path: str | os.PathLike) -> Path | None:
    """position_entropy.png: the entropy of the id at each token position across images, one panel per discrete
    tokenizer: a heat map for a 2D token grid, a curve for 1D tokens. None when no tokenizer has ids."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {name: t["dataset_meta"] for name, t in report["tokenizers"].items()
              if t["dataset_meta"].get("position_entropy")}
    if not series:
        return None
    fig = Figure(figsize=(4.6 * len(series), 4.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (name, meta) in zip(axes, series.items(), strict=True):
        values = np.asarray(meta["position_entropy"], dtype=float)
        grid = [int(g) for g in meta.get("token_grid") or [values.size]]
        bound = meta.get("position_entropy_bound")
        if len(grid) == 2 and grid[0] * grid[1] == values.size:
            image = ax.imshow(values.reshape(grid), cmap="viridis", vmin=0, vmax=bound or None)
            fig.colorbar(image, ax=ax, shrink=0.8, label="bits")
            ax.set_xlabel("token column")
            ax.set_ylabel("token row")
        else:
            ax.plot(np.arange(values.size), values, marker="o", markersize=3, linewidth=1.2)
            if bound:
                ax.axhline(bound, color="0.6", linestyle="--", linewidth=0.8, label=f"log2 min(n, K) = {bound:.2f}")
                ax.legend(fontsize=8, frameon=False)
            ax.set_xlabel("token position")
            ax.set_ylabel("entropy (bits)")
            _style(ax)
        ax.set_title(f"{name}  (n={meta.get('stats_n', '?')})", fontsize=10, fontweight="bold", loc="left")
    fig.suptitle("Per-position token entropy across images", fontsize=12, fontweight="bold")
    path = Path(path)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return path
