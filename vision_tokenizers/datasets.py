"""Where benchmark images come from: bundled samples, a local COCO val2017 folder, the ILSVRC2012 validation set,
the built-in text pages (`textsizes`), or any folder. An `ImageSet` is a list of files with their ids; its pixels are
streamed (`vision_tokenizers.loader`), never held. A folder with an `annotations.json` beside its images carries text
boxes (`ImageSet.annotations`), which turn the text fidelity metric on."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vision_tokenizers import loader
from vision_tokenizers.coco import coco_subset, ids_sha256, select
from vision_tokenizers.images import list_images
from vision_tokenizers.text_fidelity import Annotations, annotations_sha256, read_annotations

# Real RGB photographs shipped inside scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg")
DEFAULT_COCO_DIR = Path("data/coco/val2017")
COCO_NAME = "coco_val2017"
IMAGENET_NAME = "imagenet_val"
IMAGENET_VAL_FILES = 50_000
TEXTSIZES = "textsizes"  # the built-in text pages (vision_tokenizers.textsizes)
IMAGENET_RESOLUTION = 256  # the published rFID protocol's crop (ADM centre crop, like every other dataset here)
_IMAGENET_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


def coco_dir(dataset_dir: str | os.PathLike | None = None) -> Path:
    return Path(dataset_dir or os.environ.get("VTOK_COCO", DEFAULT_COCO_DIR))


def imagenet_file(number: int) -> str:
    """The file name of validation image `number` (1 .. 50,000)."""
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def sample_paths() -> list[Path]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return [root / name for name in SKIMAGE_PHOTOS if (root / name).is_file()]


def resolve_dataset(dataset: str, dataset_dir: str | os.PathLike | None = None) -> tuple[str, list[Path]]:
    """`samples` | `coco` | `imagenet` | a folder path -> (dataset name, image paths in the dataset's order). Raises
    FileNotFoundError (a missing folder or file) or ValueError (a folder that is not the dataset), each with a fix.
    `dataset_dir`: the folder of `coco` (instead of VTOK_COCO) or `imagenet` (instead of VTOK_IMAGENET)."""
    if dataset_dir is not None and dataset not in ("coco", "imagenet"):
        raise ValueError(f"--dataset-dir is the folder of --dataset coco or imagenet, not of --dataset {dataset}")
    if dataset == "samples":
        return "samples", sample_paths()
    if dataset == TEXTSIZES:
        from vision_tokenizers import textsizes

        return TEXTSIZES, list_images(textsizes.cached_folder())
    if dataset == "imagenet":
        return IMAGENET_NAME, list_imagenet(imagenet_dir(dataset_dir))
    if dataset == "coco":
        folder = coco_dir(dataset_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"COCO val2017 folder {folder} not found: run `vtok download coco --dir {folder}`, "
                                    "set VTOK_COCO to a folder of val2017 JPEGs, or pass --dataset PATH")
        return COCO_NAME, [folder / entry.file_name for entry in coco_subset()]  # the list's order, not sorted
    folder = Path(dataset)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset {dataset}: not 'samples', 'coco', 'imagenet', 'textsizes' or an existing "
                                "folder of images")
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"--dataset {dataset}: no image files (.jpg/.png/...) in that folder")
    return folder.name, paths


def unique_ids(paths: list[Path]) -> list[str]:
    """Image ids: the file's stem; a file whose stem is taken already (a.jpg then a.png, or x/a.jpg then y/a.jpg)
    gets its name with the dot as `_` ("a_png"), then a counter, so that no two files share records."""
    ids: list[str] = []
    taken: set[str] = set()
    for path in paths:
        image_id, n = ImageSet.image_id(path), 1
        if image_id in taken:
            image_id = base = path.name.replace(".", "_")
            while image_id in taken:
                n += 1
                image_id = f"{base}_{n}"
        taken.add(image_id)
        ids.append(image_id)
    return ids


@dataclass
class ImageSet:
    """A list of image files and their ids; `batches` streams them cropped to a resolution (nothing is kept)."""

    name: str
    paths: list[Path]
    # image id -> one-line reason, filled (in this process) as a pass meets files that cannot be read
    bad: dict[str, str] = field(default_factory=dict)
    # For a dataset defined by a published id list (`coco`, `imagenet`): sha256 of the selected ids, "\n"-joined; a
    # run records it.
    id_list_sha256: str | None = None
    ids: list[str] = field(init=False, repr=False)  # one unique id per path, in order
    shard: tuple[int, int] | None = None  # (i, N), 1-based: keep only shard i of N (see `shard_indices`)
    # Further fields of the protocol's dataset record (`imagenet`: the standard set and whether this is a subset of it)
    protocol_fields: dict[str, object] = field(default_factory=dict)
    # The whole dataset's identity, before any shard: count and sha256 of its "<id>\t<size>" lines, in order.
    num_files: int = field(init=False, repr=False)
    file_list_sha256: str = field(init=False, repr=False)
    # Text boxes per image id (annotations.json beside the images), or None: the text fidelity metric is off
    annotations: Annotations | None = None

    def __post_init__(self) -> None:
        self.ids = unique_ids(self.paths)
        self.num_files, self.file_list_sha256 = len(self.paths), file_list_sha256(self.ids, self.paths)
        if self.shard is not None:  # ids come from the whole list, so a file has the same id in every shard
            keep = shard_indices(self.ids, *self.shard)
            self.paths, self.ids = [self.paths[k] for k in keep], [self.ids[k] for k in keep]

    @staticmethod
    def image_id(path: Path) -> str:
        return path.stem

    def items(self, ids: list[str] | None = None) -> list[tuple[str, Path]]:
        """(image id, path) of every file, or of the `ids` only, in dataset order."""
        keep = None if ids is None else set(ids)
        return [(i, p) for i, p in zip(self.ids, self.paths, strict=True) if keep is None or i in keep]

    def batches(self, resolution: int, batch_size: int, *, ids: list[str] | None = None, workers: int = 0,
                pin_memory: bool = False, on_bad: Callable[[str, str], None] | None = None
                ) -> Iterator[tuple[list[str], torch.Tensor]]:
        """(ids, uint8 (B,3,R,R)) batches of the readable files (of `ids` only, when given), in dataset order, decoded
        and cropped in `workers` DataLoader workers (see `vision_tokenizers.loader`). A file that cannot be read is
        left out, entered in `bad` and passed to `on_bad(image_id, reason)`."""
        def bad(image_id: str, reason: str) -> None:
            self.bad[image_id] = reason
            if on_bad is not None:
                on_bad(image_id, reason)
        return loader.batches(self.items(ids), resolution, batch_size, workers=workers, pin_memory=pin_memory,
                              on_bad=bad)


def file_list_sha256(ids: list[str], paths: list[Path]) -> str:
    """sha256 of one "<image id>\t<file size>" line per file (size -1 when unreadable): the same folder gives the
    same hash on any machine and mount point; a renamed, added, removed or re-encoded file changes it."""
    digest = hashlib.sha256()
    for image_id, path in zip(ids, paths, strict=True):
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        digest.update(f"{image_id}\t{size}\n".encode())
    return digest.hexdigest()


def shard_indices(ids: list[str], index: int, count: int) -> list[int]:
    """Positions (in dataset order) of shard `index` of `count` (1-based): the files ordered by the sha256 of their
    id and dealt round-robin. Deterministic whatever order the files were listed or arrived in, sizes within one
    file of each other, and the shards of one dataset partition it."""
    if not 1 <= index <= count:
        raise ValueError(f"--shard {index}/{count}: expected i/N with 1 <= i <= N")
    order = sorted(range(len(ids)), key=lambda k: (hashlib.sha256(ids[k].encode()).hexdigest(), ids[k]))
    return sorted(order[index - 1::count])


def open_dataset(dataset: str, num_images: int | None = None, shard: tuple[int, int] | None = None,
                 dataset_dir: str | os.PathLike | None = None, warn: Callable[[str], None] | None = None) -> ImageSet:
    """The dataset's first `num_images` files, then (optionally) one shard of them. `warn` receives what the user
    should know but that does not stop the run (an incomplete ImageNet folder)."""
    if dataset == "coco":
        return open_coco(num_images, shard, dataset_dir)
    if dataset == "imagenet":
        return open_imagenet(num_images, shard, dataset_dir, warn)
    name, paths = resolve_dataset(dataset, dataset_dir)
    selected = paths[:num_images] if num_images else paths
    fields: dict[str, object] = {}
    if name == TEXTSIZES:
        from vision_tokenizers import textsizes

        fields["textsizes_sha256"] = textsizes.dataset_sha256()
    annotations = None
    if dataset not in ("samples", "coco", "imagenet"):  # a folder (or textsizes' cached one): its annotations.json
        annotations = dataset_annotations(paths[0].parent if name == TEXTSIZES else Path(dataset), paths,
                                          len(selected), warn)
    if annotations is not None:
        fields["annotations"] = {"boxes": annotations.count, "images": len(annotations.boxes),
                                 "sha256": annotations.sha256}
    return ImageSet(name, selected, shard=shard, protocol_fields=fields, annotations=annotations)


def dataset_annotations(folder: Path, paths: list[Path], keep: int,
                        warn: Callable[[str], None] | None = None) -> Annotations | None:
    """`folder/annotations.json` checked against every file of the folder (so an entry for a file beyond
    --num-images is not called unknown), then restricted to the first `keep` files, the ones measured. Each bad
    entry is one `warn` line; None when the folder has no annotations.json."""
    ids = unique_ids(paths)
    out = read_annotations(folder, paths, ids)
    if out is None:
        return None
    for problem in out.problems:
        if warn is not None:
            warn(problem)
    kept = set(ids[:keep])
    boxes = {k: v for k, v in out.boxes.items() if k in kept}
    return Annotations(boxes, out.problems, annotations_sha256(boxes),
                       {k: v for k, v in out.sizes.items() if k in kept})


def open_coco(num_images: int | None = None, shard: tuple[int, int] | None = None,
              dataset_dir: str | os.PathLike | None = None) -> ImageSet:
    """The published comparison's COCO subset: exactly the first N listed images, in the list's order.

    Every one of them must be in the folder (a subset with holes would not be the published one).
    """
    name, paths = resolve_dataset("coco", dataset_dir)
    try:
        entries = select(num_images)
    except ValueError as exc:
        raise FileNotFoundError(str(exc)) from None
    paths = paths[:len(entries)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        folder = paths[0].parent
        raise FileNotFoundError(
            f"COCO folder {folder} lacks {len(missing)} of the first {len(entries)} listed images (e.g. {missing[0]}): "
            f"run `vtok download coco --num-images {len(entries)} --dir {folder}`")
    return ImageSet(name, paths, id_list_sha256=ids_sha256(entries), shard=shard)


# ---------------------------------------------------------------------------------------------------------------------
# ILSVRC2012 validation: the standard rFID set


def imagenet_dir(dataset_dir: str | os.PathLike | None = None) -> Path:
    """--dataset-dir, else $VTOK_IMAGENET: an existing folder, or FileNotFoundError saying how to give one."""
    value = dataset_dir or os.environ.get("VTOK_IMAGENET")
    if not value:
        raise FileNotFoundError("--dataset imagenet: no folder given: pass --dataset-dir DIR or set VTOK_IMAGENET to "
                                "the folder of the 50,000 ILSVRC2012_val_*.JPEG files (flat or in synset folders)")
    folder = Path(value)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset imagenet: {folder} is not a folder (from "
                                f"{'--dataset-dir' if dataset_dir else 'VTOK_IMAGENET'})")
    return folder


def list_imagenet(folder: Path) -> list[Path]:
    """The ILSVRC2012_val_*.JPEG files in `folder` or one level of sub-folders (the 1,000 synset folders), sorted by
    file name. Other files are ignored; a validation file found twice, or a number outside 1 .. 50,000, is a
    ValueError (this is not one copy of the validation set)."""
    by_name: dict[str, Path] = {}
    for path in [*folder.glob("ILSVRC2012_val_*.JPEG"), *folder.glob("*/ILSVRC2012_val_*.JPEG")]:
        match = _IMAGENET_FILE.fullmatch(path.name)
        if match is None or path.is_dir():
            continue
        if not 1 <= int(match.group(1)) <= IMAGENET_VAL_FILES:
            raise ValueError(f"--dataset imagenet: {path} is not one of the {IMAGENET_VAL_FILES:,} validation files "
                             f"(they are numbered 1 to {IMAGENET_VAL_FILES}); remove it from {folder}")
        if path.name in by_name:
            raise ValueError(f"--dataset imagenet: {path.name} is in {folder} twice ({by_name[path.name]} and {path}); "
                             "keep one copy")
        by_name[path.name] = path
    if not by_name:
        raise FileNotFoundError(f"--dataset imagenet: no ILSVRC2012_val_*.JPEG in {folder} or its sub-folders: give "
                                "the folder of the ILSVRC2012 validation images (--dataset-dir or VTOK_IMAGENET)")
    return [by_name[name] for name in sorted(by_name)]


def open_imagenet(num_images: int | None = None, shard: tuple[int, int] | None = None,
                  dataset_dir: str | os.PathLike | None = None,
                  warn: Callable[[str], None] | None = None) -> ImageSet:
    """The ILSVRC2012 validation images found, sorted by file name; the first `num_images` of them.

    A folder lacking files is measured as it is, with one warning (`warn`) naming the count and examples of what is
    missing; the protocol records every selection other than all 50,000 as a subset (`protocol_fields["subset"]`),
    so its numbers never pass for the standard protocol's.
    """
    folder = imagenet_dir(dataset_dir)
    found = list_imagenet(folder)
    paths = found[:num_images] if num_images else found
    first = [imagenet_file(k) for k in range(1, len(paths) + 1)]
    holes = [p.name for p in paths] != first  # the selection is not simply the first N of the standard list
    if len(found) < IMAGENET_VAL_FILES and (holes or not num_images):
        names = {p.name for p in found}
        missing = [name for k in range(1, IMAGENET_VAL_FILES + 1) if (name := imagenet_file(k)) not in names]
        uses = f"--num-images {num_images} uses the first {len(paths):,} found" if num_images else \
            f"measuring the {len(paths):,} found"
        message = (f"found {len(found):,} of {IMAGENET_VAL_FILES:,} ILSVRC2012_val_*.JPEG in {folder}; missing e.g. "
                   f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} ({len(missing):,} in all); {uses}; "
                   f"the protocol records a subset of {len(paths):,}, not the standard {IMAGENET_VAL_FILES:,}")
        if warn is not None:
            warn(message)
    if len(paths) == IMAGENET_VAL_FILES:
        subset = None
    elif not holes:
        subset = f"the first {len(paths):,} of {IMAGENET_VAL_FILES:,} (by file name)"
    else:
        subset = f"{len(paths):,} of {IMAGENET_VAL_FILES:,} (the folder lacks {IMAGENET_VAL_FILES - len(found):,})"
    ids = [p.stem for p in paths]
    fields = {"standard": f"ILSVRC2012 validation, {IMAGENET_VAL_FILES:,} images, ADM centre crop at "
                          f"{IMAGENET_RESOLUTION} px", "subset": subset}
    return ImageSet(IMAGENET_NAME, paths, id_list_sha256=hashlib.sha256("\n".join(ids).encode()).hexdigest(),
                    shard=shard, protocol_fields=fields)
