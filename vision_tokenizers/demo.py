"""The Gradio viewer: ``python -m vision_tokenizers.demo [--port 7860] [--host 127.0.0.1] [--models a,b]``.

Upload a photo (or pick a sample), choose tokenizers, and see the original beside each reconstruction with PSNR,
SSIM, LPIPS, token count, bits per pixel and encode/decode time, a zoomed crop and an amplified difference. The
selected models are loaded (and warmed up) at start-up; a tokenizer whose weights are missing is listed as
unavailable with the reason. Uploads are capped in bytes and pixels; the server binds 127.0.0.1 unless told otherwise.
Needs the `demo` extra (gradio).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision_tokenizers.playground import (
    TokenizerPlayground,
    difference,
    metric_lines,
    side_by_side,
    spec_info,
    weights_status,
    zoom_crop,
)

DEFAULT_MAX_UPLOAD_MB = 20
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: any camera photo, not a decompression bomb
PANEL = 256                      # px per image in the zoom and difference rows


@dataclass
class DemoState:
    """What the server knows: the playground, each tokenizer's status, and the limits."""

    playground: TokenizerPlayground
    names: list[str]                                          # offered in the UI, in order
    status: dict[str, str] = field(default_factory=dict)      # name -> "ready" | "weights present…" | reason
    max_pixels: int = DEFAULT_MAX_PIXELS
    lpips: bool = True

    def available(self, name: str) -> bool:
        return not self.status.get(name, "").startswith("unavailable")


def prepare(names: list[str], playground: TokenizerPlayground, preload: list[str], *, warmup: bool = True,
            lpips: bool = True, log=print) -> DemoState:
    """Load (and warm up) `preload`; check the others' weights without loading them."""
    from vision_tokenizers.weights import WeightsUnavailable

    state = DemoState(playground, names, lpips=lpips)
    for name in names:
        if name in preload:
            started = time.perf_counter()
            try:
                tokenizer = playground.tokenizer(name)
            except WeightsUnavailable as exc:
                state.status[name] = f"unavailable: {exc}"
                log(f"{name}: unavailable: {exc}")
                continue
            if warmup:  # the first call pays one-off costs (allocator, kernels); keep them out of the shown times
                size = tokenizer.spec.resolution
                playground.measure(np.full((size, size, 3), 127, np.uint8), name, lpips=False)
            state.status[name] = "ready"
            log(f"{name}: ready ({time.perf_counter() - started:.1f} s)")
        else:
            present, where = weights_status(name, playground.weights_dir)
            state.status[name] = "weights present; loads on first use" if present else f"unavailable: {where}"
    if lpips and playground.lpips() is None:
        log(f"LPIPS unavailable: {playground.lpips_reason}")
    return state


def status_markdown(state: DemoState) -> str:
    rows = ["| tokenizer | resolution | tokens | codebook | bits/px | status |", "|---|---|---|---|---|---|"]
    for name in state.names:
        info = spec_info(state.playground.tokenizer(name).spec) if name in state.playground.tokenizers else None
        if info is None:
            from vision_tokenizers.registry import get_spec

            info = spec_info(get_spec(name))
        rows.append(f"| `{name}` | {info['resolution']} | {info['num_tokens']} | {info['codebook_size'] or '-'} | "
                    f"{info['bits_per_pixel']:.4g} | {_cell(state.status.get(name, ''))} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------------------------------
# the work behind the button


class InputRejected(ValueError):
    """An upload the demo refuses (too many pixels, unreadable); the message is shown to the user."""


def open_upload(path: str | os.PathLike, max_pixels: int):
    """The uploaded file as an RGB image, after checking its pixel count from the header (before decoding)."""
    from PIL import Image

    from vision_tokenizers.images import BadImage, load_image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as exc:  # any decoder error: not an image we can use
        raise InputRejected(f"not a readable image ({type(exc).__name__})") from exc
    if width * height > max_pixels:
        raise InputRejected(f"image has {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
                            f"{max_pixels / 1e6:.0f} (start the demo with --max-pixels to change it)")
    try:
        return load_image(path)
    except BadImage as exc:
        raise InputRejected(str(exc)) from exc


def run_tokenizers(state: DemoState, image_path: str | None, names: list[str], seed: int = 0) -> tuple[list, str]:
    """Reconstruct the image with each tokenizer: (results, metrics table in Markdown)."""
    from vision_tokenizers.weights import WeightsUnavailable

    if not image_path:
        raise InputRejected("upload an image or pick a sample first")
    if not names:
        raise InputRejected("choose at least one tokenizer")
    image = open_upload(image_path, state.max_pixels)
    results, notes = [], []
    rows = ["| tokenizer | PSNR (dB) | SSIM | LPIPS | tokens | bits/px | encode | decode |",
            "|---|---|---|---|---|---|---|---|"]
    for name in names:
        try:
            result = state.playground.measure(image, name, lpips=state.lpips, seed=seed)
        except WeightsUnavailable as exc:
            state.status[name] = f"unavailable: {exc}"
            rows.append(f"| `{name}` | unavailable | | | | | | |")
            notes.append(f"{name} unavailable: {exc}")
            continue
        state.status[name] = "ready"
        results.append(result)
        m = result.metrics
        lpips = f"{m['lpips']:.4f}" if "lpips" in m else "n/a"
        rows.append(f"| `{name}` | {m['psnr']:.2f} | {m['ssim']:.4f} | {lpips} | {result.tokens.numel()} | "
                    f"{m['bpp']:.4g} | {result.encode_s * 1e3:.0f} ms | {result.decode_s * 1e3:.0f} ms |")
        for metric, reason in result.skipped.items():
            note = f"{metric.upper()} n/a: {reason}"
            if note not in notes:
                notes.append(note)
    notes.append("Metrics compare 8-bit images at each tokenizer's resolution on the same centre crop; times are the "
                  f"wall time of this request on {state.playground.device}.")
    return results, "\n".join(rows) + "\n\n" + "\n\n".join(_cell(n) for n in notes)


def render(results: list, zoom_x: float, zoom_y: float, zoom_fraction: float, gain: float):
    """(side by side with captions, zoomed crops, amplified differences) as PIL images, or Nones."""
    if not results:
        return None, None, None
    largest = max(results, key=lambda r: r.original.shape[0])
    panels = [(largest.original_image, ["original", f"{largest.original.shape[1]}x{largest.original.shape[0]} "
                                                    "centre crop"])]
    panels += [(r.image, metric_lines(r.tokenizer, r.metrics, r.tokens.numel(), (r.encode_s, r.decode_s)))
               for r in results]
    comparison = side_by_side(panels)
    center = (zoom_x / 100, zoom_y / 100)
    zooms = [(zoom_crop(largest.original, center, zoom_fraction / 100, PANEL), ["original"])]
    zooms += [(zoom_crop(r.reconstruction, center, zoom_fraction / 100, PANEL), [r.tokenizer]) for r in results]
    diffs = [(difference(r.original, r.reconstruction, gain), [f"{r.tokenizer}  |diff| x{gain:g}"]) for r in results]
    return comparison, side_by_side(zooms, PANEL), side_by_side(diffs, PANEL)


# ---------------------------------------------------------------------------------------------------------------------
# the page


def build_demo(state: DemoState, samples: list[Path] | None = None):
    import gradio as gr

    from vision_tokenizers.datasets import sample_paths

    samples = sample_paths() if samples is None else samples
    choices = [(name if state.available(name) else f"{name} (unavailable)", name) for name in state.names]
    selected = [n for n in state.names if state.status.get(n) == "ready"]

    def on_run(image_path, names, seed, zx, zy, zf, gain):
        try:
            results, table = run_tokenizers(state, image_path, list(names or []), int(seed or 0))
        except InputRejected as exc:
            raise gr.Error(str(exc)) from None
        return (*render(results, zx, zy, zf, gain), table, results, status_markdown(state))

    def on_view(results, zx, zy, zf, gain):
        return render(results or [], zx, zy, zf, gain)

    with gr.Blocks(title="vtok: image tokenizer viewer") as demo:
        gr.Markdown("## Image tokenizers, side by side\nUpload a photo or pick a sample, choose tokenizers, press "
                    "**Reconstruct**. Each tokenizer sees the same centre crop at its own resolution.")
        with gr.Row():
            with gr.Column(scale=1):
                # image_mode=None + filepath: the uploaded file itself reaches our loader (EXIF, alpha, pixel cap),
                # never a copy gradio re-encoded; pasted images arrive as PNG, not lossy WebP
                image = gr.Image(type="filepath", image_mode=None, format="png", label="image",
                                 sources=["upload", "clipboard"], elem_id="input-image", height=320)
                if samples:
                    gr.Examples([[str(p)] for p in samples], inputs=[image], label="samples")
                tokenizers = gr.CheckboxGroup(choices, value=selected, label="tokenizers", elem_id="tokenizers")
                seed = gr.Number(0, precision=0, label="seed (sampling de-tokenizers only)", elem_id="seed")
                run = gr.Button("Reconstruct", variant="primary", elem_id="run")
                with gr.Accordion("zoom and difference", open=True):
                    zoom_x = gr.Slider(0, 100, 50, step=1, label="zoom centre x (%)")
                    zoom_y = gr.Slider(0, 100, 50, step=1, label="zoom centre y (%)")
                    zoom_f = gr.Slider(5, 100, 25, step=1, label="zoom window (% of the side)")
                    gain = gr.Slider(1, 16, 4, step=1, label="difference amplification")
            with gr.Column(scale=2):
                comparison = gr.Image(type="pil", format="png", label="original | reconstructions",
                                      elem_id="comparison", interactive=False)
                metrics = gr.Markdown(elem_id="metrics")
                zoom = gr.Image(type="pil", format="png", label="zoomed crop", elem_id="zoom", interactive=False)
                diff = gr.Image(type="pil", format="png", label="amplified difference", elem_id="difference",
                                interactive=False)
        with gr.Accordion("tokenizers on this server", open=False):
            status = gr.Markdown(status_markdown(state), elem_id="status")
        results = gr.State([])
        view_inputs = [zoom_x, zoom_y, zoom_f, gain]
        run.click(on_run, [image, tokenizers, seed, *view_inputs], [comparison, zoom, diff, metrics, results, status],
                  concurrency_limit=1)
        for slider in view_inputs:
            slider.release(on_view, [results, *view_inputs], [comparison, zoom, diff])
    return demo


def build_parser() -> argparse.ArgumentParser:
    from vision_tokenizers.cli import _names

    parser = argparse.ArgumentParser(prog="python -m vision_tokenizers.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--models", type=_names, default=None, metavar="A,B",
                        help="tokenizers to preload (default: every registered one); others load on first use")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--weights-dir", default=None, metavar="DIR",
                        help="weights folder (default: $VTOK_WEIGHTS or model_weights/)")
    parser.add_argument("--offline", action="store_true", help="never download weights")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest upload in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest image in pixels (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS")
    parser.add_argument("--no-warmup", action="store_true", help="do not warm up the preloaded models")
    return parser


def main(argv: list[str] | None = None) -> int:
    from vision_tokenizers.registry import list_tokenizers

    args = build_parser().parse_args(argv)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local viewer
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("the demo needs gradio: pip install 'vtok-bench[demo]'", file=sys.stderr)
        return 2
    preload = args.models if args.models is not None else list_tokenizers()
    names = list(dict.fromkeys([*list_tokenizers(), *preload]))
    playground = TokenizerPlayground(args.device, args.dtype, args.weights_dir, args.offline or None)
    state = prepare(names, playground, preload, warmup=not args.no_warmup, lpips=not args.no_lpips,
                    log=lambda msg: print(msg, flush=True))
    state.max_pixels = args.max_pixels
    demo = build_demo(state)
    demo.queue(default_concurrency_limit=1)
    print(f"vtok demo on http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=int(args.max_upload_mb * 1024 * 1024),
                show_error=True, ssr_mode=False, footer_links=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
