"""The results store (append-only JSONL) and its aggregation into tables, plots and reconstruction grids.

Plain functions, no pytest, no models. A report directory looks like::

    records.jsonl              written by the main pytest process (and `records.<worker>.jsonl` by xdist workers)
    recon/<tokenizer>/<image_id>.png, originals/<resolution>/<image_id>.png
    stats/<tokenizer>/<image_id>.npz   per-image Inception features and token ids (`stats`): resume, shards, KID
    benchmark_results.csv      one row per image x tokenizer (with its protocol and tokenizer config ids)
    summary_results.csv        one row per tokenizer: means, std, bootstrap 95 % intervals, rFID, KID, usage
    summary.md, summary.png    the report
    grid.png (+ grid_<res>.png when tokenizers differ in resolution), grid_worst_<metric>.png, position_entropy.png
    report.json                the aggregated numbers

Record types (one JSON object per line): ``run``, ``protocol`` (once per run; rows reference its id), ``tokenizer``
(facts, settings, checkpoint sha256s; rows reference its ``config`` id), ``image``, ``seed_image`` (--seeds K),
``dataset``, ``timing``, ``skip``, ``store`` (a torn line dropped), ``interrupted``, ``merge``; see `aggregate`.
Results are keyed by (tokenizer, image id, metric): the latest record wins (a row measured under another protocol
or config replaces the old one whole), so a rerun into the same directory appends and the aggregation dedupes.
Records may carry ``ts`` (epoch seconds) to order several record files.
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
from vision_tokenizers.results.protocol import MixedProtocols, config_id, make_protocol, protocol_diff, short_hash
from vision_tokenizers.results.report import build_report
from vision_tokenizers.results.stats import (
    reduce_statistics,
    reduce_stored_statistics,
    save_image_stats,
    stats_relpath,
)
from vision_tokenizers.results.store import (
    append_record,
    completed_images,
    read_records,
    read_records_checked,
    record_files,
    recorded_evaluation,
    resumable_images,
    seeded_images,
)
from vision_tokenizers.results.tables import write_csv, write_json, write_markdown

__all__ = [
    "CONVENTIONS", "GRID_CELL", "GRID_IMAGES", "METRICS", "QUALITY", "RECORDS_FILE", "RECORDS_GLOB", "STAGES",
    "TOKEN_STATS", "MixedProtocols", "aggregate", "append_record", "build_report", "completed_images", "config_id",
    "fmt_time", "make_grid", "make_protocol", "metric_cell", "plot_summary", "protocol_diff", "read_records",
    "read_records_checked", "record_files", "recorded_evaluation", "reduce_statistics", "reduce_stored_statistics",
    "resumable_images", "save_image_stats", "seeded_images", "short_hash", "stats_relpath", "write_csv", "write_json",
    "write_markdown",
]
