"""`vtok`: try image tokenizers on your own images, fetch weights and the COCO subset, rebuild reports.

    vtok list
    vtok run --model taef2_512,magvit2_256 --input photo.jpg --output out/
    vtok download weights all
    vtok download coco --num-images 1000
    vtok report results/latest
    vtok perf --json perf.json

Also `python -m vision_tokenizers ...`. Exit status: 0 when something was done, 1 when nothing could be done (every
tokenizer or image unavailable), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

USAGE_ERROR, NOTHING_DONE = 2, 1


def _names(value: str, *, allow_all: bool = True) -> list[str]:
    """'a,b' / 'all' / 'tiny' -> registered names; an unknown name is a usage error naming the known ones."""
    from vision_tokenizers.registry import REGISTRY

    if not allow_all and value.strip() in ("all", "tiny"):
        value = ""
    try:
        names = REGISTRY.select(value)
        for name in names:
            REGISTRY.check(name)
    except KeyError as exc:
        raise argparse.ArgumentTypeError(exc.args[0]) from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE.py",
                        help="import a plug-in that registers tokenizers (repeatable; also env VTOK_PLUGINS and "
                             "installed entry points in group vtok.tokenizers)")


def discover_plugins(argv: list[str] | None, prog: str) -> bool:
    """Load the plug-ins before the real parse validates tokenizer names (a first pass finds every --plugin);
    a plug-in that fails is one usage line on stderr and False."""
    from vision_tokenizers.plugins import PluginError, discover

    first = argparse.ArgumentParser(add_help=False)
    add_plugin_option(first)
    known, _ = first.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        discover(known.plugin)
    except PluginError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return False
    return True


def _weights_dir(value: str | None) -> Path:
    from vision_tokenizers.weights import default_weights_dir

    return Path(value) if value else default_weights_dir()


def _workers(value: str) -> int:
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected 0 (decode in this process) or a number of workers")
    return int(value)


def _progress_disabled(mode: str) -> bool | None:
    """tqdm's `disable`: None lets tqdm decide (on for a terminal, off in logs and CI)."""
    return {"on": False, "off": True}.get(mode)


# ---------------------------------------------------------------------------------------------------------------------
# vtok list


def cmd_list(args: argparse.Namespace) -> int:
    from vision_tokenizers.playground import weights_status
    from vision_tokenizers.registry import REGISTRY

    weights_dir = _weights_dir(args.weights_dir)
    rows = [("name", "kind", "res", "tokens", "codebook", "bits/px", "registered by", "weights")]
    for name in REGISTRY.names(tiny=None if args.all else False):
        entry = REGISTRY.entry(name)
        spec = entry.spec
        present, where = weights_status(name, weights_dir)
        origins = sorted({wf.origin.rsplit("/", 1)[0] for wf in spec.weights if wf.repo_id or wf.url})
        weights = f"present in {where}" if present else \
            f"missing (from {', '.join(origins)})" if origins else "missing (no public origin: test model files)"
        rows.append((name + (" [test]" if spec.tiny else ""), spec.kind, str(spec.resolution),
                     "x".join(map(str, spec.token_shape)), str(spec.codebook_size or "-"),
                     f"{spec.bits_per_pixel:.4g}", entry.origin.partition(" (")[0], weights))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"\nweights folder: {weights_dir} (--weights-dir / VTOK_WEIGHTS); missing files come from the origin shown"
          " (`vtok download weights NAME`)" + ("" if args.all else "; --all also lists the tiny test models"))
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# vtok run


def _inputs(path: Path) -> list[tuple[str, Path]]:
    """(image id, file) for a file or every image file under a folder (sorted by path), with the benchmark's ids
    (`vision_tokenizers.datasets.unique_ids`: the file's stem, made unique), so that records of `vtok run` and of
    `pytest bench --dataset FOLDER` name the same file alike."""
    from vision_tokenizers.datasets import unique_ids
    from vision_tokenizers.images import list_images

    files = [path] if path.is_file() else list_images(path)
    return list(zip(unique_ids(files), files, strict=True))


def _save_tokens(tokens, target: Path, fmt: str, meta: dict[str, str]) -> None:
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    tokens = tokens.detach().cpu().contiguous()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({"tokens": tokens}, str(target.with_suffix(".safetensors")), metadata=meta)
    else:
        import numpy as np

        if tokens.dtype in (torch.bfloat16,):  # numpy has no bfloat16: widen, exactly
            tokens = tokens.float()
        np.save(target.with_suffix(".npy"), tokens.numpy())


class _Run:
    """The state of one `vtok run`: where files go, what was recorded, what failed."""

    def __init__(self, args: argparse.Namespace) -> None:
        from vision_tokenizers.loader import default_workers
        from vision_tokenizers.results import RECORDS_FILE

        self.args = args
        self.out = Path(args.output)
        self.records = self.out / RECORDS_FILE
        self.bad: dict[str, str] = {}         # image id -> reason (reported once)
        self.workers = default_workers() if args.workers is None else args.workers
        self.done: dict[str, dict[str, dict]] = {}  # image id -> tokenizer -> {metrics, resolution, ...}
        self.saved_originals: set[tuple[int, str]] = set()
        self.bar = None  # the current tokenizer's progress bar

    def record(self, **obj) -> None:
        from vision_tokenizers.results import append_record

        append_record(self.records, {**obj, "ts": time.time()})

    def save_png(self, pixels_chw, rel: str) -> str:
        from PIL import Image

        target = self.out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        Image.fromarray(pixels_chw.permute(1, 2, 0).cpu().numpy()).save(tmp, format="PNG")
        os.replace(tmp, target)
        return rel

    def batches(self, items: list[tuple[str, Path]], resolution: int, size: int) -> Iterator:
        """(ids, uint8 (B,3,R,R)) batches streamed by the benchmark's loader (`vision_tokenizers.loader`, --workers
        DataLoader workers); unreadable files are reported (once) and left out."""
        import torch
        from tqdm.auto import tqdm

        from vision_tokenizers.loader import batches

        def bad(image_id: str, reason: str) -> None:
            self.bad[image_id] = reason
            tqdm.write(f"skipped: {reason}", file=sys.stderr)  # one line, above any progress bar
            self.record(type="skip", tokenizer=None, what="image", image_id=image_id, reason=reason)
            if self.bar is not None:
                self.bar.update(1)

        todo = [(image_id, path) for image_id, path in items if image_id not in self.bad]
        return batches(todo, resolution, size, workers=self.workers,
                       pin_memory=torch.device(self.args.device).type == "cuda", on_bad=bad)


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from vision_tokenizers.evaluate import evaluate
    from vision_tokenizers.playground import TokenizerPlayground
    from vision_tokenizers.weights import WeightsUnavailable

    source = Path(args.input)
    if not source.exists():
        print(f"vtok run: error: --input {source}: no such file or folder", file=sys.stderr)
        return USAGE_ERROR
    items = _inputs(source)
    if not items:
        print(f"vtok run: error: --input {source}: no image files (.jpg/.png/...) there", file=sys.stderr)
        return USAGE_ERROR
    run = _Run(args)
    run.out.mkdir(parents=True, exist_ok=True)
    options = {"model": args.model, "input": str(source), "dataset": source.name, "num_images": len(items),
               "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
               "weights_dir": str(_weights_dir(args.weights_dir)), "save_tokens": args.save_tokens,
               "seed": args.seed}
    run.record(type="run", tool="vtok run", started=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               options=options, host={"python": platform.python_version(), "platform": platform.platform(terse=True),
                                      "device": args.device})
    playground = TokenizerPlayground(args.device, args.dtype, _weights_dir(args.weights_dir), args.offline or None)
    lpips = None
    if not args.no_lpips:
        lpips = playground.lpips()
        if lpips is None:
            print(f"LPIPS skipped: {playground.lpips_reason}", file=sys.stderr)
    summaries, loaded = [], 0
    for name in args.model:
        try:
            tokenizer = playground.load(name)
        except WeightsUnavailable as exc:
            print(f"{name}: skipped: {exc}", file=sys.stderr, flush=True)
            run.record(type="skip", tokenizer=name, what="tokenizer", reason=str(exc))
            continue
        loaded += 1
        spec, resolution = tokenizer.spec, tokenizer.spec.resolution
        if lpips is None and not args.no_lpips:
            run.record(type="skip", tokenizer=name, what="metric:lpips", reason=str(playground.lpips_reason))
        todo = [it for it in items if it[0] not in run.bad]
        bar = run.bar = tqdm(total=len(todo), desc=name, unit="img", disable=_progress_disabled(args.progress),
                             dynamic_ncols=True)

        def store(batch, name=name, spec=spec, resolution=resolution, bar=bar) -> None:
            for i, image_id in enumerate(batch.ids):
                original = f"originals/{resolution}/{image_id}.png"
                if (resolution, image_id) not in run.saved_originals:
                    run.save_png(batch.original[i], original)
                    run.saved_originals.add((resolution, image_id))
                recon = run.save_png(batch.reconstruction[i], f"recon/{name}/{image_id}.png")
                if args.save_tokens:
                    meta = {"tokenizer": name, "image_id": image_id, "kind": spec.kind,
                            "token_shape": json.dumps(list(spec.token_shape)),
                            "codebook_size": str(spec.codebook_size or "")}
                    _save_tokens(batch.tokens[i], run.out / "tokens" / name / image_id, args.save_tokens, meta)
                seed = {"seed": batch.seeds[i]} if getattr(batch, "seeds", None) is not None else {}
                run.record(type="image", tokenizer=name, image_id=image_id, dataset=source.name,
                           resolution=resolution, metrics=batch.metrics[i], recon=recon, original=original, **seed)
                run.done.setdefault(image_id, {})[name] = {"metrics": batch.metrics[i], "num_tokens": spec.num_tokens}
            bar.update(len(batch.ids))

        def failed(failure, name=name, bar=bar) -> None:  # a failing model call: one line and a record; go on
            tqdm.write(f"{name}: failed on {', '.join(failure.ids)}: {failure.reason}", file=sys.stderr)
            for image_id in failure.ids:
                run.record(type="skip", tokenizer=name, what="image:failed", image_id=image_id,
                           reason=failure.reason)
            bar.update(len(failure.ids))

        started = time.perf_counter()
        try:
            result = evaluate(tokenizer, run.batches(todo, resolution, args.batch_size), lpips=lpips, on_batch=store,
                              run_seed=args.seed, on_failure=failed)
        finally:
            bar.close()
        elapsed = time.perf_counter() - started
        playground.unload(name)  # one model in memory at a time
        if not result.per_image:
            continue
        run.record(type="dataset", tokenizer=name, metrics=result.dataset_metrics,
                   meta={**result.dataset_meta, "n": len(result.per_image), "dataset": source.name,
                         "resolution": resolution})
        summaries.append(f"{name}: {len(result.per_image)} image(s), PSNR {result.mean('psnr'):.2f} dB, "
                         f"SSIM {result.mean('ssim'):.4f}" +
                         (f", LPIPS {result.mean('lpips'):.4f}" if lpips is not None else "") +
                         f", {spec.bits_per_pixel:.4g} bits/px, {len(result.per_image) / elapsed:.2f} img/s")
    if not run.done:
        print("vtok run: nothing done: " + ("no tokenizer could be loaded" if not loaded else
                                            "no input image could be read"), file=sys.stderr)
        return NOTHING_DONE
    _write_comparisons(run, [n for n in args.model if any(n in v for v in run.done.values())])
    from vision_tokenizers.results import build_report

    files = build_report(run.out)
    for line in summaries:
        print(line)
    print(f"wrote {len(run.done)} comparison image(s) to {run.out / 'compare'}, per-image metrics to "
          f"{files['csv']}, summary to {files['markdown']}")
    if run.bad:
        print(f"{len(run.bad)} unreadable file(s) skipped (listed above)", file=sys.stderr)
    return 0


def _write_comparisons(run: _Run, names: list[str]) -> None:
    """compare/<image>.png: the original | each tokenizer's reconstruction, metrics under each."""
    from PIL import Image

    from vision_tokenizers.playground import metric_lines, side_by_side

    for image_id, per_tok in run.done.items():
        originals = sorted(run.out.glob(f"originals/*/{image_id}.png"), key=lambda p: -int(p.parent.name))
        with Image.open(originals[0]) as im:
            panels = [(im.convert("RGB"), ["original", f"{im.width}x{im.height} centre crop"])]
        for name in names:
            if name in per_tok:
                with Image.open(run.out / "recon" / name / f"{image_id}.png") as rec:
                    info = per_tok[name]
                    panels.append((rec.convert("RGB"), metric_lines(name, info["metrics"], info["num_tokens"])))
        target = run.out / "compare" / f"{image_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        side_by_side(panels).save(target)


# ---------------------------------------------------------------------------------------------------------------------
# vtok download


def cmd_download_weights(args: argparse.Namespace) -> int:
    from vision_tokenizers.registry import get_spec, list_tokenizers
    from vision_tokenizers.weights import WeightsUnavailable, resolve_weights

    names = list_tokenizers() if "all" in args.names else args.names
    try:
        names = _names(",".join(names), allow_all=False)
    except argparse.ArgumentTypeError as exc:
        print(f"vtok download weights: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    weights_dir = _weights_dir(args.weights_dir)
    ok = 0
    for name in names:
        try:
            files = resolve_weights(get_spec(name), weights_dir, offline=args.offline or None)
        except WeightsUnavailable as exc:
            print(f"{name}: {exc}")
            continue
        ok += 1
        print(f"{name}: ok, " + ", ".join(sorted({str(p.parent) for p in files.values()})))
    print(f"{ok} of {len(names)} tokenizer(s) have their weights")
    return 0 if ok else NOTHING_DONE


def cmd_download_coco(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vision_tokenizers.coco import VAL2017, DownloadError, download_coco, select
    from vision_tokenizers.datasets import coco_dir

    try:
        entries = select(args.num_images)
    except ValueError as exc:
        print(f"vtok download coco: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    folder = Path(args.dir) if args.dir else coco_dir()
    archive = replace(VAL2017, url=args.url) if args.url else VAL2017
    try:
        result = download_coco(folder, entries=entries, archive=archive, archive_path=args.archive,
                               keep_archive=args.keep_archive, offline=args.offline,
                               progress=_progress_disabled(args.progress) is not True,
                               log=lambda msg: print(msg, file=sys.stderr))
    except DownloadError as exc:
        print(f"vtok download coco: {exc}", file=sys.stderr)
        return NOTHING_DONE
    how = (f"extracted {len(result.extracted)}" + (" from the downloaded archive" if result.downloaded else "")
           if result.extracted else "already there, verified; nothing downloaded")
    print(f"COCO val2017, first {len(entries)} images of the published list: {folder} ({how}); "
          f"id list sha256 {result.ids_sha256}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# vtok report


def cmd_report(args: argparse.Namespace) -> int:
    from vision_tokenizers.results import RECORDS_GLOB, build_report

    report_dir = Path(args.report_dir)
    if report_dir.is_file():  # results/latest as a text file where symlinks are not possible
        report_dir = report_dir.parent / report_dir.read_text(encoding="utf-8").strip()
    if not report_dir.is_dir() or not any(report_dir.glob(RECORDS_GLOB)):
        print(f"vtok report: error: no {RECORDS_GLOB} in {report_dir}", file=sys.stderr)
        return USAGE_ERROR
    for name, path in build_report(report_dir, max_images=args.max_images).items():
        print(f"{name}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# vtok perf

QUICK = {"pipeline_images": 16, "harness_images": 8, "repeats": 1, "rss_counts": "8,24", "speed_timeout_s": 60.0}
FULL = {"pipeline_images": 256, "harness_images": 32, "repeats": 2, "rss_counts": "400,1600", "speed_timeout_s": 180.0}


def _counts(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in value.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected image counts such as 400,1600")
    return counts


def cmd_perf(args: argparse.Namespace) -> int:
    from vision_tokenizers.perf import SECTIONS, PerfOptions, format_table, run_perf, write_json

    preset = QUICK if args.quick else FULL
    if args.plugin:  # the measuring child processes load the same plug-ins
        from vision_tokenizers.plugins import ENV_VAR

        os.environ[ENV_VAR] = ",".join([*filter(None, os.environ.get(ENV_VAR, "").split(",")), *args.plugin])
    pick = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    if args.dataset is not None and not Path(args.dataset).is_dir():
        print(f"vtok perf: error: --dataset {args.dataset}: not a folder", file=sys.stderr)
        return USAGE_ERROR
    names = args.tokenizers if args.tokenizers is not None else \
        _names("taef2_512" if args.quick else "all")
    opts = PerfOptions(
        dataset=Path(args.dataset) if args.dataset else None, cache=Path(args.cache) if args.cache else None,
        resolution=args.resolution, batch_size=args.batch_size, device=args.device,
        pipeline_images=pick["pipeline_images"], tokenizer=args.tokenizer, weights_dir=args.weights_dir,
        model_resolution=args.model_resolution or None, harness_images=pick["harness_images"],
        metrics=args.metrics or ("pixel" if args.quick else "all"), repeats=pick["repeats"],
        rss_counts=_counts(pick["rss_counts"]) if isinstance(pick["rss_counts"], str) else pick["rss_counts"],
        rss_timeout_s=args.rss_timeout_s, tokenizers=tuple(names), speed_images=args.speed_images,
        speed_warmup=args.speed_warmup, speed_timeout_s=pick["speed_timeout_s"], dtype=args.dtype,
        sections=tuple(args.sections or SECTIONS))
    results = run_perf(opts)
    results["command"] = "vtok perf " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    print(format_table(results))
    if args.json:
        write_json(results, Path(args.json))
        print(f"results: {args.json}")
    failed = [n for n, s in results["sections"].items() if s["error"]]
    if failed:
        print(f"vtok perf: section(s) failed: {', '.join(failed)} (see above)", file=sys.stderr)
    return NOTHING_DONE if len(failed) == len(results["sections"]) else 0


def _sections(value: str) -> list[str]:
    from vision_tokenizers.perf import SECTIONS

    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{value!r}: expected some of {','.join(SECTIONS)}")
    return chosen


def _add_perf_parser(sub) -> None:
    p = sub.add_parser(
        "perf", help="benchmark the benchmark: pipeline img/s, harness overhead, peak RSS, random-weights speed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print one table of the benchmark's own performance (numbers only, nothing is asserted):\n"
                    "  pipeline  img/s of the streaming image path (decode, crop, batch) for 0, 1, 2 and all workers\n"
                    "  harness   evaluate (metrics, bookkeeping; then files -> workers -> evaluate) vs the bare\n"
                    "            encode/decode loop on the same batches, as a ratio of img/s\n"
                    "  rss       peak RSS of a fresh process streaming N images through loader + evaluate\n"
                    "  speed     encode/decode s/image of each full-size tokenizer with random weights\n"
                    "Images: generated 640x480 JPEGs (seeded, cached) unless --dataset FOLDER. A failing section is "
                    "reported and the others run. See docs/performance.md.")
    p.add_argument("--quick", action="store_true", help="small counts (16/8 images, RSS at 8 and 24, 1 repeat, "
                   "pixel metrics, speed of taef2_512 only): a smoke run of every section")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--sections", type=_sections, default=None, metavar="A,B",
                   help="some of pipeline,harness,rss,speed (default: all four)")
    p.add_argument("--dataset", metavar="FOLDER", help="a folder of images instead of the generated JPEGs")
    p.add_argument("--cache", metavar="DIR", help="where generated images are kept (default $VTOK_CACHE/perf or "
                   "the temp folder)")
    p.add_argument("--resolution", type=int, default=256, help="pipeline crop (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="speed section's dtype")
    p.add_argument("--pipeline-images", type=int, default=None, help="images per pipeline pass (default 256)")
    p.add_argument("--tokenizer", default="taef2_512", help="tokenizer of the harness and rss sections: its files "
                   "from --weights-dir when there, else random weights (default taef2_512)")
    p.add_argument("--weights-dir", default=None, metavar="DIR", help="weights folder (default $VTOK_WEIGHTS or "
                   "model_weights/)")
    p.add_argument("--model-resolution", type=int, default=256, help="crop of the harness and rss sections "
                   "(default 256; 0: the tokenizer's own)")
    p.add_argument("--harness-images", type=int, default=None, help="images of the harness comparison (default 32)")
    p.add_argument("--metrics", choices=("all", "pixel"), default=None,
                   help="harness and rss metrics: all (LPIPS and Inception as the benchmark runs them; random weights "
                        "of the same networks when the released files are absent) or pixel (default: all; --quick: "
                        "pixel)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes, best kept (default 2)")
    p.add_argument("--rss-counts", type=_counts, default=None, metavar="N,M", help="images per RSS run (default "
                   "400,1600)")
    p.add_argument("--rss-timeout-s", type=float, default=None, help="stop an RSS run after this many seconds")
    p.add_argument("--tokenizers", type=_names, default=None, metavar="A,B",
                   help="speed section: names or 'all' (default all; --quick: taef2_512)")
    p.add_argument("--speed-images", type=int, default=1, help="timed images per tokenizer (default 1)")
    p.add_argument("--speed-warmup", type=int, default=1, help="untimed images first (default 1)")
    p.add_argument("--speed-timeout-s", type=float, default=None,
                   help="skip a tokenizer that takes longer (load, warm-up and images; default 180, --quick 60)")
    add_plugin_option(p)
    p.set_defaults(func=cmd_perf)


# ---------------------------------------------------------------------------------------------------------------------
# the parser


def _add_weights_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="folder searched for weights before the hub cache / a download (default: $VTOK_WEIGHTS or "
                        "model_weights/)")
    p.add_argument("--offline", action="store_true", help="never touch the network (also HF_HUB_OFFLINE=1)")


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar on stderr (auto: only on a terminal, so never in CI logs)")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed distribution's version, without importing torch for `--help`
        __version__ = version("vtok-bench")
    except PackageNotFoundError:
        __version__ = "(not installed)"
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="vtok", description=__doc__, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"vtok-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="every registered tokenizer: resolution, tokens, codebook, bits/px, weights",
                       description="List every registered tokenizer with its resolution, tokens per image, codebook "
                                   "size, bits per pixel, and whether its weights are on this machine (checked "
                                   "without network) or where they would come from.")
    p.add_argument("--all", action="store_true", help="also list the tiny test models")
    add_plugin_option(p)
    p.add_argument("--weights-dir", default=None, metavar="DIR", help="weights folder to check (default: "
                   "$VTOK_WEIGHTS or model_weights/)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "run", help="reconstruct your images with one or more tokenizers; PNGs, comparison images, metrics CSV",
        formatter_class=formatter,
        description="Reconstruct a file or a folder of images with each tokenizer.\n\nWrites to --output:\n"
                    "  compare/<image>.png         original | each tokenizer, metrics under each\n"
                    "  recon/<tokenizer>/<image>.png, originals/<resolution>/<image>.png (the centre crops compared)\n"
                    "  benchmark_results.csv       per-image metrics (PSNR, SSIM, LPIPS, MAE, RMSE, bits/px)\n"
                    "  summary.md, summary.png, grid.png, report.json, records.jsonl (`vtok report` rebuilds them)\n"
                    "  tokens/<tokenizer>/<image>.npy|.safetensors  with --save-tokens\n\n"
                    "Unreadable files and tokenizers without weights are reported in one line each and skipped; "
                    "the exit status is 1 only when nothing could be done.")
    add_plugin_option(p)
    p.add_argument("--model", "-m", required=True, type=_names, metavar="A,B",
                   help="comma-separated tokenizer names (see `vtok list`), 'all' or 'tiny'")
    p.add_argument("--input", "-i", required=True, metavar="FILE|FOLDER", help="an image, or a folder searched "
                   "recursively for .jpg/.png/.webp/...")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--save-tokens", nargs="?", const="npy", choices=("npy", "safetensors"), default=None,
                   help="also save each image's tokens (default format: npy)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--batch-size", type=int, default=4, help="images per encode/decode call (default 4)")
    p.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help="DataLoader workers decoding and cropping images while the model runs (default: min(8, CPU "
                        "count); 0: in this process); results do not depend on it")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (needs the AlexNet weights)")
    p.add_argument("--seed", type=int, default=0, help="run seed of sampling de-tokenizers; each image draws from "
                   "its own generator seeded from (seed, image id) (default 0)")
    _add_weights_options(p)
    _add_progress(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("download", help="fetch tokenizer weights or the COCO val2017 subset",
                       description="Fetch tokenizer weights or the COCO val2017 subset of the published comparison.")
    dl = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = dl.add_parser("weights", help="weights of NAME... or all",
                      description="Make the weights of each tokenizer available: the weights folder first, then the "
                                  "Hugging Face cache / hub or the file's origin URL (sha256-checked where pinned). "
                                  "One line per tokenizer; exit status 1 only when none has its weights.")
    q.add_argument("names", nargs="+", metavar="NAME", help="tokenizer names, or 'all'")
    add_plugin_option(q)
    _add_weights_options(q)
    q.set_defaults(func=cmd_download_weights)
    q = dl.add_parser("coco", help="the first N images of the published COCO val2017 list",
                      description="Put the published comparison's COCO val2017 images (the first N entries of the "
                                  "official instances_val2017.json, shipped with this package) into --dir. Fetches "
                                  "the official val2017.zip (815,585,330 bytes, sha256-verified; an interrupted "
                                  "download resumes), extracts only the listed images and records their sha256; a "
                                  "folder that already holds them is verified without any download.")
    q.add_argument("--num-images", type=int, default=1000, help="first N listed images, 1..1000 (default 1000)")
    q.add_argument("--dir", default=None, help="image folder (default: $VTOK_COCO or data/coco/val2017); the archive "
                   "is downloaded beside it")
    q.add_argument("--archive", default=None, metavar="ZIP", help="use this copy of val2017.zip (sha256-checked)")
    q.add_argument("--url", default=None, help="a mirror of val2017.zip (the same size and sha256 are required)")
    q.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip after extraction")
    q.add_argument("--offline", action="store_true", help="verify only; never download")
    _add_progress(q)
    q.set_defaults(func=cmd_download_coco)

    p = sub.add_parser("report", help="rebuild tables and plots from stored results (same as python -m reports)",
                       description="Rebuild benchmark_results.csv, summary.md/png, grids and report.json from the "
                                   "records*.jsonl of a benchmark run or of `vtok run`.")
    p.add_argument("report_dir", nargs="?", default="results/latest", help="report folder (default results/latest)")
    p.add_argument("--max-images", type=int, default=6, help="images per reconstruction grid (default 6)")
    p.set_defaults(func=cmd_report)
    _add_perf_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not discover_plugins(argv, "vtok"):
        return USAGE_ERROR
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
