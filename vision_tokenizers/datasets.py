"""Where benchmark images come from: bundled samples, a local COCO val2017 folder, or any folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vision_tokenizers.coco import coco_subset, ids_sha256, select
from vision_tokenizers.images import BadImage, list_images, load_image, prepare_image

# Real RGB photographs shipped inside scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg")
DEFAULT_COCO_DIR = Path("data/coco/val2017")
COCO_NAME = "coco_val2017"


def coco_dir() -> Path:
    return Path(os.environ.get("VTOK_COCO", DEFAULT_COCO_DIR))


def sample_paths() -> list[Path]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return [root / name for name in SKIMAGE_PHOTOS if (root / name).is_file()]


def resolve_dataset(dataset: str) -> tuple[str, list[Path]]:
    """`samples` | `coco` | a folder path -> (dataset name, sorted image paths). Raises FileNotFoundError with a fix."""
    if dataset == "samples":
        return "samples", sample_paths()
    if dataset == "coco":
        folder = coco_dir()
        if not folder.is_dir():
            raise FileNotFoundError(f"COCO val2017 folder {folder} not found: run `vtok download coco --dir {folder}`, "
                                    "set VTOK_COCO to a folder of val2017 JPEGs, or pass --dataset PATH")
        return COCO_NAME, [folder / entry.file_name for entry in coco_subset()]  # the list's order, not sorted
    folder = Path(dataset)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset {dataset}: not 'samples', 'coco' or an existing folder of images")
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
    """A list of image files, cropped on demand to each tokenizer's resolution (cached as uint8)."""

    name: str
    paths: list[Path]
    bad: dict[str, str] = field(default_factory=dict)  # image id -> one-line reason
    # For a dataset defined by a published id list (`coco`): sha256 of the selected ids, "\n"-joined; a run records it.
    id_list_sha256: str | None = None
    ids: list[str] = field(init=False, repr=False)  # one unique id per path, in order
    shard: tuple[int, int] | None = None  # (i, N), 1-based: keep only shard i of N (see `shard_indices`)
    # The whole dataset's identity, before any shard: count and sha256 of its "<id>\t<size>" lines, in order.
    num_files: int = field(init=False, repr=False)
    file_list_sha256: str = field(init=False, repr=False)
    _cache: dict[int, tuple[list[str], torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.ids = unique_ids(self.paths)
        self.num_files, self.file_list_sha256 = len(self.paths), file_list_sha256(self.ids, self.paths)
        if self.shard is not None:  # ids come from the whole list, so a file has the same id in every shard
            keep = shard_indices(self.ids, *self.shard)
            self.paths, self.ids = [self.paths[k] for k in keep], [self.ids[k] for k in keep]

    @staticmethod
    def image_id(path: Path) -> str:
        return path.stem

    def at_resolution(self, resolution: int) -> tuple[list[str], torch.Tensor]:
        """(ids, uint8 (N,3,R,R)) of every readable image; unreadable ones land in `bad` and are left out."""
        if resolution not in self._cache:
            ids, arrays = [], []
            for image_id, path in zip(self.ids, self.paths, strict=True):
                try:
                    image = load_image(path)
                except BadImage as exc:
                    self.bad[image_id] = str(exc)
                    continue
                ids.append(image_id)
                arrays.append(np.asarray(prepare_image(image, resolution)))
            stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous() if arrays else \
                torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
            self._cache[resolution] = (ids, stacked)
        return self._cache[resolution]

    def batches(self, resolution: int, batch_size: int) -> Iterator[tuple[list[str], torch.Tensor]]:
        """Yield (ids, uint8 (B,3,R,R)) batches in a fixed order."""
        ids, pixels = self.at_resolution(resolution)
        for start in range(0, len(ids), batch_size):
            yield ids[start:start + batch_size], pixels[start:start + batch_size]


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


def open_dataset(dataset: str, num_images: int | None = None, shard: tuple[int, int] | None = None) -> ImageSet:
    """The dataset's first `num_images` files, then (optionally) one shard of them."""
    if dataset == "coco":
        return open_coco(num_images, shard)
    name, paths = resolve_dataset(dataset)
    return ImageSet(name, paths[:num_images] if num_images else paths, shard=shard)


def open_coco(num_images: int | None = None, shard: tuple[int, int] | None = None) -> ImageSet:
    """The published comparison's COCO subset: exactly the first N listed images, in the list's order.

    Every one of them must be in the folder (a subset with holes would not be the published one).
    """
    name, paths = resolve_dataset("coco")
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
