"""One measurement in a fresh process (`python -m vision_tokenizers.perf.child rss|speed ...`), so that its peak RSS
is its own and a slow or failing tokenizer can be stopped: prints one JSON line, the last line of stdout.

- `rss`: stream N images of a folder through the benchmark's path (`ImageSet.batches`: DataLoader workers, then
  `evaluate` with the per-image metrics), then report the peak RSS of this process and of its workers;
- `speed`: encode / decode seconds per image of a full-size tokenizer with random weights.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from vision_tokenizers.perf.sections import sync


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def load_tokenizer(name: str, device: torch.device, weights_dir: str | None, resolution: int | None = None):
    """(tokenizer, "weights" | "random weights"): its files when they are here, else (same network, same time) the
    released-size network with random weights."""
    from vision_tokenizers.registry import load
    from vision_tokenizers.weights import WeightsUnavailable

    try:
        return load(name, device=device, weights_dir=weights_dir, offline=True, resolution=resolution), "weights"
    except WeightsUnavailable as missing:
        try:
            return load(name, device=device, random_weights=True, resolution=resolution), "random weights"
        except WeightsUnavailable:
            raise missing from None


def run_rss(args: argparse.Namespace) -> dict:
    from vision_tokenizers.datasets import ImageSet
    from vision_tokenizers.evaluate import evaluate
    from vision_tokenizers.images import list_images
    from vision_tokenizers.perf.backbones import metric_nets

    device = torch.device(args.device)
    tokenizer, weights = load_tokenizer(args.tokenizer, device, args.weights_dir)
    resolution = args.resolution or tokenizer.resolution
    lpips, fid, metrics = metric_nets(args.metrics, device, Path(args.cache))
    images = ImageSet("perf", list_images(Path(args.dataset))[:args.num_images])
    started = time.perf_counter()
    result = evaluate(tokenizer, images.batches(resolution, args.batch_size, workers=args.workers,
                                                pin_memory=device.type == "cuda"),
                      lpips=lpips, fid=fid, reduce=False)
    return {"images": len(result.per_image), "seconds": time.perf_counter() - started,
            "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF), "workers_peak_rss_mb": _peak_mb(resource.RUSAGE_CHILDREN),
            "tokenizer": args.tokenizer, "weights": weights, "resolution": resolution, "metrics": metrics}


def run_speed(args: argparse.Namespace) -> dict:
    from vision_tokenizers.loader import crop_file
    from vision_tokenizers.perf.images import photo
    from vision_tokenizers.random_weights import parameter_count
    from vision_tokenizers.registry import load

    device = torch.device(args.device)
    tokenizer = load(args.tokenizer, device=device, dtype=args.dtype, random_weights=True)
    path = Path(args.cache) / "speed_input.jpg"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(0).save(path, quality=90)
    pixels = (crop_file(path, tokenizer.resolution)[None].to(device).float() / 255)
    encode, decode = [], []
    with torch.inference_mode():
        for k in range(args.warmup + args.images):  # batch size 1: seconds per image
            t0 = time.perf_counter()
            tokens = tokenizer.encode(pixels)
            sync(device)
            t1 = time.perf_counter()
            tokenizer.decode(tokens)
            sync(device)
            if k >= args.warmup:
                encode.append(t1 - t0)
                decode.append(time.perf_counter() - t1)
    return {"tokenizer": args.tokenizer, "resolution": tokenizer.resolution, "parameters": parameter_count(tokenizer),
            "encode_s": encode, "decode_s": decode, "device": str(device), "dtype": args.dtype}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vision_tokenizers.perf.child")
    parser.add_argument("what", choices=("rss", "speed"))
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--dataset")
    parser.add_argument("--num-images", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--metrics", default="pixel")
    parser.add_argument("--weights-dir")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    from vision_tokenizers.plugins import discover

    discover()  # plug-in tokenizers: entry points and VTOK_PLUGINS (which `vtok perf --plugin` extends)
    out = run_rss(args) if args.what == "rss" else run_speed(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
