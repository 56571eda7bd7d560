"""The one image path: files -> decoded, EXIF-oriented, ADM-cropped uint8 batches, streamed.

The benchmark, `vtok run` and `TokenizerPlayground` all read files through `crop_file`; a dataset pass goes through
`stream`, which runs `crop_file` in `torch.utils.data.DataLoader` workers (`workers=0`: in this process) so that
decoding overlaps the model's work and memory does not grow with the number of images:

- order: the files' order, always (a sequential sampler; the DataLoader hands chunks back in order whatever worker
  decoded them), and batches of exactly `batch_size` readable images, the last one shorter: the same batches, so
  the same bits, as a serial pass with any number of workers;
- bounded: each worker keeps at most `PREFETCH` chunks of `batch_size` images ready;
- pinned: `pin_memory=True` (CUDA) pins the batches for the copy to the device;
- unreadable files are yielded as `Unreadable(image_id, reason)` items in the same stream (a worker cannot report
  them any other way); `batches` hands them to a callback and yields the rest;
- flat: glibc keeps what the model and the metrics free in its heaps (its mmap threshold rises after the first large
  free, and fragmented arenas are not returned), so a long pass's RSS would creep up by hundreds of MB before it
  levels off, and its peak would grow with the length of the pass; `batches` hands the freed memory back
  (`malloc_trim`) between batches whenever the resident size has grown `TRIM_MARGIN` beyond what it was after the
  last trim. Not after every batch: the pages handed back must be faulted in again by the next batch, which cost a
  near-free tokenizer 40 % of its throughput here (a time interval instead let the peak grow with the pass).

Ids are given with the files (`vision_tokenizers.datasets.unique_ids`): they come from paths, never from decoding.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vision_tokenizers.images import BadImage, load_image, prepare_image

PREFETCH = 2  # chunks of `batch_size` images each worker keeps ready
TRIM_MARGIN = 32 << 20  # bytes the process may grow beyond its size after the last trim before freed heap goes back


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None under another C library (nothing to hand back then)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux `/proc/self/statm`), or None where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Unreadable:
    """A file `load_image` refused: `reason` is its one line (file and fix)."""

    image_id: str
    reason: str


def default_workers() -> int:
    """min(8, the CPUs this process may run on)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def crop_file(path: str | os.PathLike, resolution: int) -> torch.Tensor:
    """One file as uint8 (3,R,R): `load_image` (8-bit RGB, EXIF orientation) then the ADM centre crop at `resolution`.
    Raises `BadImage` (one line) for a file that cannot be used."""
    array = np.array(prepare_image(load_image(path), resolution))  # a writable copy, owned by the tensor
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class CroppedFiles(Dataset):
    """(image id, path) pairs -> (image id, uint8 (3,R,R) or None, reason or None); what a worker runs."""

    def __init__(self, items: Sequence[tuple[str, Path]], resolution: int) -> None:
        self.items, self.resolution = list(items), resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str | None]:
        image_id, path = self.items[index]
        try:
            return image_id, crop_file(path, self.resolution), None
        except BadImage as exc:
            return image_id, None, str(exc)


def _collate(items: list[tuple[str, torch.Tensor | None, str | None]], resolution: int):
    """One chunk: (ids of the readable files, their pixels stacked, [(id, reason)] of the others)."""
    good = [(image_id, pixels) for image_id, pixels, _ in items if pixels is not None]
    stacked = torch.stack([p for _, p in good]) if good else \
        torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
    return [i for i, _ in good], stacked, [(i, reason) for i, pixels, reason in items if pixels is None]


def stream(items: Sequence[tuple[str, Path]], resolution: int, batch_size: int, *, workers: int = 0,
           pin_memory: bool = False) -> Iterator[tuple[list[str], torch.Tensor] | Unreadable]:
    """(ids, uint8 (B,3,R,R)) batches of the readable files among `items`, in order, and an `Unreadable` item for
    each other file, yielded as soon as its chunk arrives (before the batch that would have held it)."""
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: expected at least 1")
    if not items:
        return
    loader = DataLoader(CroppedFiles(items, resolution), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=functools.partial(_collate, resolution=resolution), pin_memory=pin_memory,
                        prefetch_factor=PREFETCH if workers else None)
    ids: list[str] = []
    parts: list[torch.Tensor] = []
    for chunk_ids, pixels, bad in loader:
        for image_id, reason in bad:
            yield Unreadable(image_id, reason)
        if not ids and len(chunk_ids) == batch_size:  # the usual case: the chunk is the batch (pinned, no copy)
            yield chunk_ids, pixels
            continue
        ids += chunk_ids
        parts.append(pixels)
        while len(ids) >= batch_size:  # a chunk with unreadable files shifted the batches: regroup
            joined = torch.cat(parts)
            batch = joined[:batch_size]
            yield ids[:batch_size], batch.pin_memory() if pin_memory else batch
            ids, parts = ids[batch_size:], [joined[batch_size:]]
    if ids:
        last = torch.cat(parts)
        yield ids, last.pin_memory() if pin_memory else last


def batches(items: Sequence[tuple[str, Path]], resolution: int, batch_size: int, *, workers: int = 0,
            pin_memory: bool = False, on_bad: Callable[[str, str], None] | None = None
            ) -> Iterator[tuple[list[str], torch.Tensor]]:
    """`stream` for `evaluate`: the batches only; each unreadable file goes to `on_bad(image_id, reason)` (in this
    process, in order). Between batches (the consumer is done with the last one), freed heap memory goes back to the
    system once the process has grown `TRIM_MARGIN` since the last time."""
    floor = None  # resident size after the last trim (or after the first batch)
    for item in stream(items, resolution, batch_size, workers=workers, pin_memory=pin_memory):
        if isinstance(item, Unreadable):
            if on_bad is not None:
                on_bad(item.image_id, item.reason)
            continue
        yield item
        resident = resident_bytes() if _MALLOC_TRIM is not None else None
        if resident is None:
            continue
        if floor is None:
            floor = resident
        elif resident > floor + TRIM_MARGIN:
            _MALLOC_TRIM(0)
            floor = resident_bytes() or resident  # what the trim could not hand back is the new floor
