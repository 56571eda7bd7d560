"""The results store (append-only JSONL) and its aggregation into tables, plots and reconstruction grids.

Plain functions, no pytest, no models. A report directory looks like::

    records.jsonl              written by the main pytest process (and `records.<worker>.jsonl` by xdist workers)
    recon/<tokenizer>/<image_id>.png, originals/<resolution>/<image_id>.png
    benchmark_results.csv      one row per image x tokenizer
    summary.md, summary.png    the report
    grid.png (+ grid_<res>.png when tokenizers differ in resolution)
    report.json                the aggregated numbers

Record types (one JSON object per line): ``run``, ``image``, ``dataset``, ``timing``, ``skip``; see `aggregate`.
Results are keyed by (tokenizer, image id, metric): the latest record wins, so a rerun into the same directory
appends and the aggregation dedupes. Records may carry ``ts`` (epoch seconds) to order several record files.
"""

from vision_tokenizers.results.aggregate import aggregate
from vision_tokenizers.results.constants import (
    CONVENTIONS,
    GRID_CELL,
    GRID_IMAGES,
    METRICS,
    QUALITY,
    RECORDS_FILE,
    RECORDS_GLOB,
    STAGES,
    TOKEN_STATS,
)
from vision_tokenizers.results.formatting import fmt_time, metric_cell
from vision_tokenizers.results.grids import make_grid
from vision_tokenizers.results.plots import plot_summary
from vision_tokenizers.results.report import build_report
from vision_tokenizers.results.store import (
    append_record,
    completed_images,
    read_records,
    record_files,
    recorded_evaluation,
)
from vision_tokenizers.results.tables import write_csv, write_json, write_markdown

__all__ = [
    "CONVENTIONS", "GRID_CELL", "GRID_IMAGES", "METRICS", "QUALITY", "RECORDS_FILE", "RECORDS_GLOB", "STAGES",
    "TOKEN_STATS", "aggregate", "append_record", "build_report", "completed_images", "fmt_time", "make_grid",
    "metric_cell", "plot_summary", "read_records", "record_files", "recorded_evaluation", "write_csv", "write_json",
    "write_markdown",
]
