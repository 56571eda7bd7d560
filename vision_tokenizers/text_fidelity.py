"""Text fidelity: can an OCR model still read a tokenizer's reconstruction of annotated text? (TokBench's T-ACC and
T-NED, measured with a real recognizer.)

For every annotated text box that survives the benchmark's centre crop, the recognizer reads the box's crop of the
8-bit original and of the 8-bit reconstruction (recognition only: the box is given, nothing is detected). Per box:

* T-ACC: 1 when what was read from the reconstruction equals the ground truth, else 0;
* T-NED: 1 - edit distance / the longer length (ICDAR 2019's normalised edit distance, as TokBench's 1-NED).

Both compare the texts with whitespace removed and case ignored (issue 18's definition: an "O" read for "o" at 6 px
says little about the tokenizer; TokBench's table uses the case-sensitive "raw" match of docTR's metric, so the same
reads can score a little higher here). The same scores of the original's crop are the OCR ceiling: what the
recognizer manages without any tokenizer in the way. Dataset numbers are means over all boxes, also per text
height bucket (box height / side of the compared image, TokBench's edges for the resolution).

The recognizer is PP-OCRv4's recognition network as shipped inside the `rapidocr-onnxruntime` wheel (ONNX, CPU; no
download). Without that package the metric is unavailable (`metrics.MetricUnavailable`: a skip with the reason).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision_tokenizers.images import MAX_ASPECT

ANNOTATIONS_FILE = "annotations.json"
OCR_PACKAGE = "rapidocr-onnxruntime"
INSTALL_HINT = "pip install 'vtok-bench[text]'"
# TokBench's text-scale bucket edges (box height / image side) per evaluation resolution (compute_all_metrics.py);
# another resolution uses the nearest one's edges.
TOKBENCH_EDGES: dict[int, tuple[float, ...]] = {256: (0.02, 0.03, 0.04), 512: (0.01, 0.02, 0.03),
                                                1024: (0.005, 0.01, 0.02)}
# A mapped box may overhang the compared image by this many pixels (rounding of the resize) and is clipped; a box
# that overhangs more was cut by the centre crop and is dropped (and counted).
EDGE_TOLERANCE = 0.5
# What the report calls the metric's parts; per-image metric keys.
IMAGE_KEYS = ("text_acc", "text_ned", "text_boxes", "text_acc_original", "text_ned_original")


# --------------------------------------------------------------------------------------------------------- scoring


def normalize(text: str) -> str:
    """The form two texts are compared in: whitespace removed, case folded."""
    return "".join(str(text).split()).casefold()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def t_acc(truth: str, read: str) -> float:
    """1.0 when the read text equals the truth (whitespace removed, case ignored), else 0.0."""
    return float(normalize(truth) == normalize(read))


def t_ned(truth: str, read: str) -> float:
    """1 - edit distance / max(length): 1.0 for a perfect read, 0.0 when nothing matches (both empty: 1.0)."""
    a, b = normalize(truth), normalize(read)
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - edit_distance(a, b) / longest


# -------------------------------------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class TextBox:
    """One annotated text: its ground truth and its box (x0, y0, x1, y1) in pixels of the image it annotates
    (pixel edges: a box covering pixels 0..9 is (0, 0, 10, 10))."""

    text: str
    box: tuple[float, float, float, float]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def crop_transform(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """(sx, sy, dx, dy): where `prepare_image` (ADM centre crop at `size`) puts a point of a width x height image:
    x' = x * sx + dx, y' = y * sy + dy. The same steps as `images.center_crop_resize`: the long side cut to
    MAX_ASPECT:1 (centred), BOX halvings while the short side is >= 2 * size, BICUBIC so the short side is `size`,
    centre crop. Every resize maps the whole pixel extent onto the new one, so each is a scale per axis."""
    sx = sy = 1.0
    dx = dy = 0.0
    keep = MAX_ASPECT * min(width, height)
    if max(width, height) > keep:
        left = (width - keep) // 2 if width > height else 0
        top = (height - keep) // 2 if height > width else 0
        dx, dy = -left, -top
        width, height = min(width, keep), min(height, keep)
    while min(width, height) >= 2 * size:
        new_w, new_h = width // 2, height // 2
        sx, sy, dx, dy = sx * new_w / width, sy * new_h / height, dx * new_w / width, dy * new_h / height
        width, height = new_w, new_h
    scale = size / min(width, height)
    new_w, new_h = round(width * scale), round(height * scale)
    sx, sy, dx, dy = sx * new_w / width, sy * new_h / height, dx * new_w / width, dy * new_h / height
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return sx, sy, dx - left, dy - top


def map_box(box: TextBox, width: int, height: int, size: int) -> TextBox | None:
    """The box in the compared (size x size) image, or None when the centre crop cuts it."""
    sx, sy, dx, dy = crop_transform(width, height, size)
    x0, y0, x1, y1 = box.box
    mapped = (x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy)
    if min(mapped) < -EDGE_TOLERANCE or max(mapped) > size + EDGE_TOLERANCE:
        return None
    return TextBox(box.text, tuple(min(max(v, 0.0), float(size)) for v in mapped))


def map_boxes(boxes: Sequence[TextBox], width: int, height: int, size: int) -> tuple[list[TextBox], int]:
    """(the boxes that survive the centre crop, mapped; how many it cut)."""
    kept = [m for m in (map_box(b, width, height, size) for b in boxes) if m is not None]
    return kept, len(boxes) - len(kept)


def pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The whole pixels a box touches (floor / ceil of its edges), at least one pixel, inside the image."""
    x0 = min(max(math.floor(box[0] + 1e-6), 0), width - 1)
    y0 = min(max(math.floor(box[1] + 1e-6), 0), height - 1)
    x1 = max(min(math.ceil(box[2] - 1e-6), width), x0 + 1)
    y1 = max(min(math.ceil(box[3] - 1e-6), height), y0 + 1)
    return x0, y0, x1, y1


def crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The box's pixels of an (H, W, 3) uint8 image, as the recognizer sees them."""
    x0, y0, x1, y1 = pixel_box(box, image.shape[1], image.shape[0])
    return np.ascontiguousarray(image[y0:y1, x0:x1])


# -------------------------------------------------------------------------------------------------- annotations


@dataclass
class Annotations:
    """Text boxes per image id (in the source image's pixels), the one-line problems of the file, its identity and
    each annotated image's (width, height) as the benchmark sees it (EXIF orientation applied)."""

    boxes: dict[str, list[TextBox]]
    problems: list[str]
    sha256: str  # of the boxes kept, canonical JSON: a changed annotation changes the protocol
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.boxes.values())

    def at(self, resolution: int) -> dict[str, tuple[list[TextBox], int]]:
        """Image id -> (its boxes mapped into the compared resolution x resolution image, how many the centre crop
        cut). Images of unknown size (unreadable files, which the loader reports) are left out."""
        return {image_id: map_boxes(boxes, *self.sizes[image_id], resolution)
                for image_id, boxes in self.boxes.items() if image_id in self.sizes}


def annotations_sha256(boxes: Mapping[str, Sequence[TextBox]]) -> str:
    canon = {k: [[b.text, [round(float(v), 4) for v in b.box]] for b in boxes[k]] for k in sorted(boxes)}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def oriented_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of an image file as the benchmark sees it (EXIF orientation applied), from its header; None
    when it cannot be read (the loader reports that file itself)."""
    from PIL import ExifTags, Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # noqa: BLE001 - an unreadable image is reported by the image loader, not here
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _parse_box(value) -> tuple[float, float, float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


def parse_annotations(data, files: Mapping[str, str], sizes: Mapping[str, tuple[int, int] | None],
                      source: str = ANNOTATIONS_FILE) -> Annotations:
    """`{"<file name>": [{"text": ..., "box": [x0, y0, x1, y1]}, ...]}` -> boxes per image id.

    `files` maps the names an entry may use (a file's path relative to the folder, and its bare name when that is
    unique) to image ids; `sizes` gives each image id's (width, height) (None: unreadable, not checked). Every bad
    entry is one line in `problems` and is left out; the rest is kept."""
    problems: list[str] = []
    boxes: dict[str, list[TextBox]] = {}
    if not isinstance(data, Mapping):
        problems.append(f"{source}: expected an object {{\"<file name>\": [{{\"text\": ..., \"box\": [x0, y0, x1, "
                        f"y1]}}, ...]}}, got {type(data).__name__}; no text boxes were read")
        return Annotations({}, problems, annotations_sha256({}))
    for name, entries in data.items():
        image_id = files.get(str(name))
        if image_id is None:
            problems.append(f"{source}: {name!r} is not an image of this dataset (keys are file paths relative to "
                            "the folder, or unique file names); its boxes are ignored")
            continue
        if not isinstance(entries, list):
            problems.append(f"{source}: {name!r}: expected a list of boxes, got {type(entries).__name__}; ignored")
            continue
        size = sizes.get(image_id)
        for k, entry in enumerate(entries):
            where = f"{source}: {name!r} box {k}"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: expected {{\"text\": ..., \"box\": [x0, y0, x1, y1]}}; ignored")
                continue
            text = entry.get("text")
            if not isinstance(text, str) or not normalize(text):
                problems.append(f"{where}: empty or missing text (give the words the box holds as \"text\"); ignored")
                continue
            box = _parse_box(entry.get("box"))
            if box is None:
                problems.append(f"{where} ({text!r}): box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got "
                                f"{entry.get('box')!r}; ignored")
                continue
            if size is not None and (box[0] < 0 or box[1] < 0 or box[2] > size[0] or box[3] > size[1]):
                problems.append(f"{where} ({text!r}): box {list(box)} lies outside the {size[0]}x{size[1]} image "
                                "(boxes are in the original image's pixels); ignored")
                continue
            boxes.setdefault(image_id, []).append(TextBox(text, box))
    return Annotations(boxes, problems, annotations_sha256(boxes))


def read_annotations(folder: str | os.PathLike, paths: Sequence[Path], ids: Sequence[str]) -> Annotations | None:
    """`folder/annotations.json` for the images `paths` (with their `ids`); None when the folder has no such file.
    An unreadable file is one problem line and no boxes."""
    path = Path(folder) / ANNOTATIONS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Annotations({}, [f"{path}: unreadable ({type(exc).__name__}: {exc}); no text boxes were read"],
                           annotations_sha256({}))
    folder = Path(folder)
    files: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    for p, image_id in zip(paths, ids, strict=True):
        try:
            files[p.relative_to(folder).as_posix()] = image_id
        except ValueError:
            pass
        names.setdefault(p.name, []).append(image_id)
    for name, owners in names.items():
        if len(owners) == 1:
            files.setdefault(name, owners[0])
    wanted = set(files.values())
    sizes = {image_id: oriented_size(p) for p, image_id in zip(paths, ids, strict=True) if image_id in wanted}
    out = parse_annotations(data, files, sizes, source=str(path))
    out.sizes = {image_id: size for image_id, size in sizes.items() if size is not None and image_id in out.boxes}
    return out


# --------------------------------------------------------------------------------------------------- recognizer


class Recognizer:
    """PP-OCRv4 text recognition (rapidocr-onnxruntime's `ch_PP-OCRv4_rec_infer.onnx`, CPU), one crop per call.

    `read(crop)` takes an (H, W, 3) RGB uint8 crop and returns the text. The crop goes in as the package's own
    recognition stage takes it (BGR, resized to height 48, normalised to [-1, 1]); one crop per call, so a read never
    depends on which other crops share a batch (the stage pads a batch to its widest crop)."""

    def __init__(self) -> None:
        from vision_tokenizers.metrics import MetricUnavailable  # here: the scoring and report parts need no torch

        try:
            import rapidocr_onnxruntime
            from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
            from rapidocr_onnxruntime.utils import read_yaml
        except ImportError as exc:
            raise MetricUnavailable(f"text fidelity needs the OCR package {OCR_PACKAGE} (PP-OCRv4 models inside its "
                                    f"wheel): {INSTALL_HINT} ({type(exc).__name__}: {exc})") from None
        root = Path(rapidocr_onnxruntime.__file__).parent
        config = dict(read_yaml(str(root / "config.yaml"))["Rec"])
        config["model_path"] = str(root / config["model_path"])
        if not Path(config["model_path"]).is_file():
            raise MetricUnavailable(f"text fidelity: {config['model_path']} is missing from the {OCR_PACKAGE} "
                                    f"install; reinstall it ({INSTALL_HINT})")
        self._rec = TextRecognizer(config)
        self.model_path = Path(config["model_path"])
        self.input_shape = tuple(config["rec_img_shape"])
        from importlib.metadata import version

        self.backend = (f"{OCR_PACKAGE} {version(OCR_PACKAGE)}, PP-OCRv4 recognition ({self.model_path.name}, "
                        f"input {self.input_shape[1]} px high, CTC greedy decoding), onnxruntime CPU")

    def read(self, image: np.ndarray) -> str:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise TypeError(f"Recognizer.read expects an (H, W, 3) uint8 RGB crop, got {image.dtype} "
                            f"{tuple(image.shape)}")
        (text, _score), = self._rec([np.ascontiguousarray(image[..., ::-1])])[0]
        return str(text)

    def describe(self, weights_sha256=None) -> dict:
        out = {"backend": self.backend, "weights": self.model_path.name,
               "compare": "whitespace removed, case ignored (casefold)",
               "t_ned": "1 - Levenshtein distance / max(len)", "crop": "box pixels (floor/ceil), no margin",
               "buckets": "box height / compared side; TokBench edges " + json.dumps(
                   {str(k): v for k, v in TOKBENCH_EDGES.items()})}
        if weights_sha256 is not None:
            out["weights_sha256"] = weights_sha256(self.model_path)
        return out


class TextFidelity:
    """Reads the boxes of one image pair and scores them. Reads of an original's crop are cached (by the crop's
    bytes), so several tokenizers at one resolution read each original box once."""

    def __init__(self, recognizer: Recognizer | None = None) -> None:
        self.recognizer = recognizer or Recognizer()
        self._original_reads: dict[str, str] = {}

    def _read_original(self, pixels: np.ndarray) -> str:
        key = hashlib.sha1(pixels.tobytes() + repr(pixels.shape).encode()).hexdigest()
        if key not in self._original_reads:
            self._original_reads[key] = self.recognizer.read(pixels)
        return self._original_reads[key]

    def hook(self, boxes: Mapping[str, tuple[Sequence[TextBox], int]]):
        """An `evaluate.ImageHook`: every image is measured with its (mapped boxes, cut count) from `boxes`
        (`Annotations.at`); an image without boxes gets text_boxes 0 (so a resumed run knows it was measured)."""
        def measure(image_id: str, original, reconstruction) -> tuple[dict[str, float], dict]:
            kept, cut = boxes.get(image_id, ((), 0))
            return self.measure(original, reconstruction, kept, cut)
        return measure

    def measure(self, original: np.ndarray, reconstruction: np.ndarray, boxes: Sequence[TextBox],
                cut: int = 0) -> tuple[dict[str, float], dict]:
        """One image: (per-image metrics, per-box details). `original` / `reconstruction`: (H, W, 3) uint8 RGB at
        the compared size (a (3, H, W) array or tensor is transposed); `boxes` in its pixels (`map_boxes`)."""
        original, reconstruction = _hwc(original), _hwc(reconstruction)
        if original.shape != reconstruction.shape:
            raise ValueError(f"text fidelity: original {original.shape} and reconstruction {reconstruction.shape} "
                             "differ in size")
        side = original.shape[0]
        details = []
        for box in boxes:
            read_original = self._read_original(crop(original, box.box))
            read = self.recognizer.read(crop(reconstruction, box.box))
            details.append({"text": box.text, "box": [round(float(v), 2) for v in box.box],
                            "ratio": box.height / side, "read": read, "read_original": read_original,
                            "acc": t_acc(box.text, read), "ned": t_ned(box.text, read),
                            "acc_original": t_acc(box.text, read_original),
                            "ned_original": t_ned(box.text, read_original)})
        metrics: dict[str, float] = {"text_boxes": float(len(details))}
        if details:
            for key, name in (("acc", "text_acc"), ("ned", "text_ned"), ("acc_original", "text_acc_original"),
                              ("ned_original", "text_ned_original")):
                metrics[name] = float(np.mean([d[key] for d in details]))
        return metrics, {"boxes": details, "cut": int(cut), "side": side}


def _hwc(image) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype != np.uint8:
        raise TypeError(f"text fidelity compares 8-bit images; got {image.dtype}")
    return np.ascontiguousarray(image)


# ------------------------------------------------------------------------------------------------------ buckets


def bucket_edges(resolution: int) -> tuple[float, ...]:
    """TokBench's edges for `resolution`, or for the nearest of 256 / 512 / 1024 (on a log scale)."""
    nearest = min(TOKBENCH_EDGES, key=lambda r: abs(math.log(resolution / r)))
    return TOKBENCH_EDGES[nearest]


def buckets(resolution: int) -> list[tuple[str, float, float]]:
    """(label, low, high) of every height bucket at `resolution`: below TokBench's smallest edge (TokBench leaves
    such boxes out of its table), TokBench's three, in increasing height."""
    edges = bucket_edges(resolution)
    out = [(f"<{edges[0]:g}", 0.0, edges[0])]
    out += [(f"{lo:g}-{hi:g}", lo, hi) for lo, hi in zip(edges, edges[1:], strict=False)]
    out.append((f">={edges[-1]:g}", edges[-1], math.inf))
    return out


def bucket_of(ratio: float, resolution: int) -> str:
    for label, lo, hi in buckets(resolution):
        if lo <= ratio < hi:
            return label
    return buckets(resolution)[-1][0]


def summarize(boxes: Iterable[Mapping], resolution: int) -> dict[str, float]:
    """Dataset metrics from per-box details: `text_acc`, `text_ned` (and `_original`: the OCR ceiling) as means over
    all boxes, `text_boxes`, and the same per height bucket as `text_acc@<bucket>` ... `text_boxes@<bucket>`."""
    boxes = list(boxes)
    out: dict[str, float] = {}

    def add(rows: list[Mapping], suffix: str) -> None:
        out[f"text_boxes{suffix}"] = float(len(rows))
        if rows:
            for key in ("acc", "ned", "acc_original", "ned_original"):
                out[f"text_{key}{suffix}"] = float(np.mean([float(r[key]) for r in rows]))

    add(boxes, "")
    for label, _, _ in buckets(resolution):
        add([b for b in boxes if bucket_of(float(b["ratio"]), resolution) == label], f"@{label}")
    return out
