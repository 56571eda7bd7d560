"""The Gradio viewer: ``python -m vision_tokenizers.demo [--port 7860] [--host 127.0.0.1] [--models a,b]``.

Upload a photo (or pick a sample), choose tokenizers, and see the original beside each reconstruction with PSNR,
SSIM, LPIPS, token count, bits per pixel and encode/decode time, a zoomed crop and an amplified difference. The
selected models are loaded (and warmed up) at start-up; a tokenizer whose weights are missing is listed as
unavailable with the reason. Uploads are capped in bytes and pixels; an unreadable or oversized upload gets one line
naming the problem and the fix. Requests wait in a bounded queue (--concurrency run at once, at most --max-queue
waiting; beyond that a request is answered "Queue is full" at once). The server binds 127.0.0.1 unless told otherwise.
Needs the `demo` extra (gradio).
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import time
import traceback
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
DEFAULT_CONCURRENCY = 1          # reconstructions at once: each already uses every core (or the whole GPU)
DEFAULT_MAX_QUEUE = 16           # requests waiting beyond the running ones; more are refused, never left hanging
PANEL = 256                      # px per image in the zoom and difference rows


@dataclass
class DemoState:
    """What the server knows: the playground, each tokenizer's status, and the limits."""

    playground: TokenizerPlayground
    names: list[str]                                          # offered in the UI, in order
    status: dict[str, str] = field(default_factory=dict)      # name -> "ready" | "weights present…" | reason
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
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


UPLOAD_FIX = "re-save it as PNG or JPEG (or copy it again from its source) and upload that"


def open_upload(path: str | os.PathLike, max_pixels: int, max_bytes: int | None = None):
    """The uploaded file as an RGB image, or `InputRejected` with one line: the file's name, the problem, the fix.

    Bytes and the pixel count (from the header) are checked before anything is decoded; decoding is the benchmark's
    own `load_image`, so an upload is converted exactly as a dataset file would be (16-bit, CMYK, alpha, EXIF).
    """
    from PIL import Image

    from vision_tokenizers.images import BadImage, load_image

    path = Path(path)
    name = path.name  # gradio keeps the uploaded file's own name; the temporary folder means nothing to the user
    try:
        size = path.stat().st_size
    except OSError:
        size = None  # load_image below says what is wrong with it
    if max_bytes is not None and size is not None and size > max_bytes:
        raise InputRejected(f"{name}: {size / 2**20:.1f} MB ({size:,} bytes); the limit is {max_bytes / 2**20:g} MB: "
                            "downscale or recompress it, or start the demo with --max-upload-mb to change the limit")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:  # Pillow refuses it from the header alone
        raise InputRejected(f"{name}: too many pixels to decode safely ({exc}); downscale it (e.g. to 6000 px on the "
                            "long side) and upload that") from None
    except Exception:  # noqa: BLE001 - any decoder error: load_image below names it in the benchmark's words
        width = height = 0
    if width * height > max_pixels:
        raise InputRejected(f"{name}: {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
                            f"{max_pixels / 1e6:g}: downscale it (e.g. to 6000 px on the long side) and upload that, "
                            "or start the demo with --max-pixels to change the limit")
    try:
        return load_image(path)
    except BadImage as exc:
        raise InputRejected(upload_message(exc, path)) from None


def upload_message(exc: Exception, path: Path) -> str:
    """A `BadImage` line ("PATH: problem; dataset-folder fix") rewritten for an upload: "NAME: problem; UPLOAD_FIX"."""
    text = str(exc).removeprefix(f"{path}: ")
    problem = text.rsplit("; ", 1)[0] if "; " in text else text  # images.py ends every line with "; <the fix>"
    return f"{path.name}: {problem.replace(str(path), path.name)}; {UPLOAD_FIX}"


def run_tokenizers(state: DemoState, image_path: str | None, names: list[str], seed: int = 0) -> tuple[list, str]:
    """Reconstruct the image with each tokenizer: (results, metrics table in Markdown)."""
    from vision_tokenizers.weights import WeightsUnavailable

    if not image_path:
        raise InputRejected("upload an image or pick a sample first")
    if not names:
        raise InputRejected("choose at least one tokenizer")
    if unknown := [n for n in names if n not in state.names]:  # raw input (preprocess=False): check what gradio would
        raise InputRejected(f"unknown tokenizer {', '.join(unknown)}; choose from {', '.join(state.names)}")
    image = open_upload(image_path, state.max_pixels, state.max_upload_bytes)
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
        except Exception as exc:  # noqa: BLE001 - one failing model (OOM, a shape error) must not hide the others
            traceback.print_exc()  # the whole story for the server's log; the page gets one line
            rows.append(f"| `{name}` | failed | | | | | | |")
            notes.append(f"{name} failed on this image ({type(exc).__name__}: {' '.join(str(exc).split())})")
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


def build_demo(state: DemoState, samples: list[Path] | None = None, *, max_queue: int = DEFAULT_MAX_QUEUE,
               concurrency: int = DEFAULT_CONCURRENCY):
    """The page, with its queue: `concurrency` reconstructions at once, at most `max_queue` requests waiting (more are
    answered "Queue is full" at once instead of piling up memory and waiting forever)."""
    import gradio as gr

    from vision_tokenizers.datasets import sample_paths

    samples = sample_paths() if samples is None else samples
    choices = [(name if state.available(name) else f"{name} (unavailable)", name) for name in state.names]
    selected = [n for n in state.names if state.status.get(n) == "ready"]

    def on_run(image, names, seed, zx, zy, zf, gain):
        # the event runs with preprocess=False: gr.Image's own preprocessing opens every upload with PIL first, so a
        # text file named .png or a bomb-sized header would end in gradio's traceback, not in open_upload's one line
        image_path = image.get("path") if isinstance(image, dict) else image
        try:
            results, table = run_tokenizers(state, image_path, list(names or []), int(seed or 0))
        except InputRejected as exc:  # the user's input, not a server fault: no traceback in the log
            raise gr.Error(html.escape(str(exc)), print_exception=False) from None  # gradio renders it as HTML
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
                  api_name="reconstruct", concurrency_limit=concurrency, preprocess=False)
        for slider in view_inputs:
            slider.release(on_view, [results, *view_inputs], [comparison, zoom, diff])
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo


def build_parser() -> argparse.ArgumentParser:
    from vision_tokenizers.cli import _names, add_plugin_option

    parser = argparse.ArgumentParser(prog="python -m vision_tokenizers.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_plugin_option(parser)
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
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                        help=f"largest upload in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"largest image in pixels (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--concurrency", type=_positive, default=DEFAULT_CONCURRENCY, metavar="N",
                        help=f"reconstructions run at once (default {DEFAULT_CONCURRENCY}: each already uses every "
                             "CPU core or the whole GPU; raise it only for small models on a large GPU)")
    parser.add_argument("--max-queue", type=_positive, default=DEFAULT_MAX_QUEUE, metavar="N",
                        help=f"requests allowed to wait for their turn (default {DEFAULT_MAX_QUEUE}); one more is "
                             "answered 'Queue is full' at once, so a burst cannot pile up memory or hang clients")
    parser.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS")
    parser.add_argument("--no-warmup", action="store_true", help="do not warm up the preloaded models")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    from vision_tokenizers.cli import discover_plugins
    from vision_tokenizers.registry import list_tokenizers

    if not discover_plugins(argv, "python -m vision_tokenizers.demo"):
        return 2
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
    state.max_upload_bytes = int(args.max_upload_mb * 1024 * 1024)
    demo = build_demo(state, max_queue=args.max_queue, concurrency=args.concurrency)
    print(f"vtok demo on http://{args.host}:{args.port} (at most {args.concurrency} at once, {args.max_queue} "
          "waiting)", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=state.max_upload_bytes,
                show_error=True, ssr_mode=False, footer_links=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
