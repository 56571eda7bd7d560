"""The entry point: rebuild every artefact of a report directory from its records."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from vision_tokenizers.results.aggregate import aggregate
from vision_tokenizers.results.constants import GRID_IMAGES, RECORDS_GLOB, WORST_K
from vision_tokenizers.results.grids import WORST_METRICS, make_grid, make_worst_grid
from vision_tokenizers.results.plots import plot_position_entropy, plot_summary, plot_sweeps, sweep_series
from vision_tokenizers.results.protocol import MixedProtocols
from vision_tokenizers.results.sections import write_summary_csv
from vision_tokenizers.results.store import read_records_checked, record_files
from vision_tokenizers.results.tables import write_csv, write_json, write_markdown
from vision_tokenizers.results.text import make_text_worst_grid, plot_text_ned


def build_report(report_dir: str | os.PathLike, *, max_images: int = GRID_IMAGES, allow_mixed: bool = False,
                 bootstrap: int | None = None) -> dict[str, Path]:
    """Rebuild every artefact of `report_dir` from its `records*.jsonl`; returns {name: path} of what was written.

    The CSV and report.json are written first. A failing plot or grid does not stop the rest: its error is
    warned about and listed in summary.md and report.json (``errors``), never silently dropped. Rows measured under
    different protocols raise MixedProtocols (naming the differing fields) unless `allow_mixed`, which puts that
    list at the top of summary.md instead. Dropped record lines (a torn last line) are warned about and listed.
    """
    report_dir = Path(report_dir)
    if not record_files(report_dir):
        raise FileNotFoundError(f"no {RECORDS_GLOB} in {report_dir}")
    records, problems = read_records_checked(report_dir)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    report = aggregate(records, bootstrap=bootstrap)
    if report["mixed"] and not allow_mixed:
        raise MixedProtocols(f"{report_dir}: rows of different protocols (pass --allow-mixed to report them "
                             "together):\n" + "\n".join(f"  {line}" for line in report["mixed"]))
    report["record_problems"] = problems
    files: dict[str, Path] = {"csv": write_csv(report, report_dir / "benchmark_results.csv"),
                              "summary_csv": write_summary_csv(report, report_dir / "summary_results.csv")}
    errors: list[str] = []

    def attempt(key: str, fn, *args, **kwargs) -> None:
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in summary.md / report.json and warned
            errors.append(f"{key}: {type(exc).__name__}: {exc}")
            warnings.warn(f"vtok report: {key} failed: {exc!r}", stacklevel=2)
            return
        if out is not None:
            files[key] = out

    attempt("summary_png", plot_summary, report, report_dir / "summary.png")
    if sweep_series(report):
        keys = "_".join(sorted({key for _, key in sweep_series(report)}))
        attempt("sweep_png", plot_sweeps, report, report_dir / f"quality_vs_{keys}.png")
    attempt("position_entropy_png", plot_position_entropy, report, report_dir / "position_entropy.png")
    attempt("text_ned_png", plot_text_ned, report, report_dir / "text_ned_vs_height.png")
    attempt("text_worst", make_text_worst_grid, report, report_dir, report_dir / "grid_worst_text.png")
    attempt("grid", make_grid, report, report_dir, report_dir / "grid.png", max_images=max_images)
    for metric in WORST_METRICS:
        attempt(f"worst_{metric}", make_worst_grid, report, report_dir, report_dir / f"grid_worst_{metric}.png",
                metric, k=WORST_K)
    resolutions = sorted({r["resolution"] for r in report["images"] if r.get("recon") and r.get("resolution")})
    if len(resolutions) > 1:
        for res in resolutions:
            attempt(f"grid_{res}", make_grid, report, report_dir, report_dir / f"grid_{res}.png", resolution=res,
                    max_images=max_images)
    files["json"] = report_dir / "report.json"
    files["markdown"] = report_dir / "summary.md"
    write_json(report, files["json"], files, errors)
    write_markdown(report, files["markdown"], {k: v for k, v in files.items() if k != "markdown"}, errors)
    return files
