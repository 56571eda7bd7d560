"""``python -m reports [DIR]``: rebuild a report (CSV, summary.md/png, grids, report.json) from its records*.jsonl."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("report_dir", nargs="?", default="results/latest", type=Path,
                        help="a report directory holding records*.jsonl (default: results/latest)")
    parser.add_argument("--max-images", type=int, default=6, help="images per reconstruction grid (default 6)")
    args = parser.parse_args(argv)

    report_dir = args.report_dir
    if report_dir.is_file():  # results/latest as a text file (no symlinks on this system)
        report_dir = report_dir.parent / report_dir.read_text(encoding="utf-8").strip()
    if not report_dir.is_dir() or not any(report_dir.glob("records*.jsonl")):
        print(f"error: no records*.jsonl in {report_dir}", file=sys.stderr)
        return 2
    from vision_tokenizers.results import build_report

    files = build_report(report_dir, max_images=args.max_images)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
