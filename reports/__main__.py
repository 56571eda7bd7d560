"""``python -m reports [DIR]``: rebuild a report (CSV, summary.md/png, grids, report.json) from its records*.jsonl.

``python -m reports DIR --model-index OUT``: also write ``OUT/<tokenizer>.yaml``, a Hugging Face ``model-index`` block
per tokenizer (the header of a model card; huggingface_hub's ``metadata_load`` reads it) with each measured PSNR,
SSIM, LPIPS, rFID and KID.

``python -m reports merge DIR... --out OUT``: merge report directories (the shards of one dataset, ``--shard i/N``)
into one report with the files a single run writes; dataset metrics (rFID, KID, codebook statistics) are reduced
again from the per-image statistics of every image, never averaged per shard.

Both refuse rows measured under different protocols (dataset, crop, metric settings, libraries, device, dtype,
seeds...) or tokenizer configs, naming the fields that differ, unless ``--allow-mixed``. A merge whose sources hold
different rows for the same (tokenizer, image) (say an fp32 and a bf16 run of the same images) is refused too, naming
the tokenizer, the number of images and the fields that differ, unless ``--prefer first|last`` keeps one source's
rows on purpose; the rows dropped are counted in the merged report. Rows equal in every source are merged and
counted. Exit status: 2 for a missing or occupied directory, 3 for a refusal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _resolve(report_dir: Path) -> Path:
    if report_dir.is_file():  # results/latest as a text file (no symlinks on this system)
        return report_dir.parent / report_dir.read_text(encoding="utf-8").strip()
    return report_dir


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-images", type=int, default=6, help="images per reconstruction grid (default 6)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="report rows of different protocols / tokenizer configs together (listed at the top)")


def _rebuild(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_dir", nargs="?", default="results/latest", type=Path,
                        help="a report directory holding records*.jsonl (default: results/latest)")
    parser.add_argument("--bootstrap", type=int, default=None,
                        help="bootstrap resamples for the confidence intervals (default: the run's --bootstrap)")
    parser.add_argument("--model-index", type=Path, default=None, metavar="OUT",
                        help="also write OUT/<tokenizer>.yaml: a Hugging Face model-index block (model card header) "
                             "per tokenizer with its measured PSNR, SSIM, LPIPS, rFID and KID")
    _common(parser)
    args = parser.parse_args(argv)
    report_dir = _resolve(args.report_dir)
    if not report_dir.is_dir() or not any(report_dir.glob("records*.jsonl")):
        print(f"error: no records*.jsonl in {report_dir}", file=sys.stderr)
        return 2
    from vision_tokenizers.results import MixedProtocols, build_report

    try:
        files = build_report(report_dir, max_images=args.max_images, allow_mixed=args.allow_mixed,
                             bootstrap=args.bootstrap)
    except MixedProtocols as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    for name, path in files.items():
        print(f"{name}: {path}")
    if args.model_index is not None:
        import json

        from vision_tokenizers.results.model_index import write_model_index

        written, left_out = write_model_index(json.loads(files["json"].read_text(encoding="utf-8")),
                                              args.model_index)
        for name, path in written.items():
            print(f"model-index {name}: {path}")
        for name, why in left_out.items():
            print(f"model-index {name}: not written: {why}")
    return 0


def _merge(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports merge",
                                     description="merge report directories (shards) into one report, exactly")
    parser.add_argument("sources", nargs="+", type=Path, help="report directories to merge (e.g. one per shard)")
    parser.add_argument("--out", required=True, type=Path, help="new directory for the merged report")
    parser.add_argument("--prefer", choices=("first", "last"), default=None,
                        help="when several sources hold different rows for the same (tokenizer, image), keep those of "
                             "the first (last) source listed; the rows dropped are counted in the report (default: "
                             "refuse)")
    _common(parser)
    args = parser.parse_args(argv)
    from vision_tokenizers.results import MixedProtocols
    from vision_tokenizers.results.merge import MergeConflict, merge_reports

    try:
        files = merge_reports([_resolve(s) for s in args.sources], args.out, allow_mixed=args.allow_mixed,
                              prefer=args.prefer, max_images=args.max_images)
    except (MixedProtocols, MergeConflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        return _merge(argv[1:])
    return _rebuild(argv)


if __name__ == "__main__":
    sys.exit(main())
