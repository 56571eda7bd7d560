"""The COCO val2017 subset of the published comparison, and a resumable, checksummed downloader for it.

The subset is the first 1,000 entries of the official ``instances_val2017.json["images"]`` in file order (not sorted
by id), shipped as ``data/coco_val2017_first1000.json`` (ids and sizes only; see ../shared/reference/COCO.md).
COCO publishes no per-image checksums, so images come from the official ``val2017.zip``: fetched into
``<name>.part`` (an interrupted transfer resumes with an HTTP Range request), verified against the archive's
published size and sha256 (a mismatch deletes the part and fetches again), then only the listed images are
extracted (zip CRC-checked). Their sha256 go into a manifest in the image folder, so a later call verifies a complete
folder without touching the network.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

LIST_FILE = "coco_val2017_first1000.json"
MANIFEST_FILE = "vtok_coco_manifest.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class CocoImage:
    """One entry of the official annotation file's ``images`` array (id, file name and size as published)."""

    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class Archive:
    """A zip to fetch: where from, its published size and sha256, and the folder its images sit in."""

    url: str
    size: int
    sha256: str
    member_dir: str = "val2017"

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name or "archive.zip"


# Official archive; size and sha256 as published by tensorflow/datasets (../shared/reference/COCO.md).
VAL2017 = Archive("http://images.cocodataset.org/zips/val2017.zip", 815_585_330,
                  "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05")


class DownloadError(RuntimeError):
    """The images could not be had; the message is one line saying why and what to do."""


@functools.cache
def coco_subset() -> tuple[CocoImage, ...]:
    """The 1,000 images of the published comparison, in the annotation file's order."""
    text = resources.files("vision_tokenizers").joinpath("data", LIST_FILE).read_text(encoding="utf-8")
    return tuple(CocoImage(int(e["id"]), str(e["file_name"]), int(e["width"]), int(e["height"]))
                 for e in json.loads(text))


def ids_sha256(entries: Sequence[CocoImage]) -> str:
    """sha256 of the ids joined by newlines (no trailing newline): for all 1,000 it is COCO.md's a09cf1f8…."""
    return hashlib.sha256("\n".join(str(e.id) for e in entries).encode()).hexdigest()


def select(num_images: int | None = None) -> list[CocoImage]:
    """The first `num_images` listed images (all 1,000 when None)."""
    subset = coco_subset()
    if num_images is None:
        return list(subset)
    if not 1 <= num_images <= len(subset):
        raise ValueError(f"--num-images {num_images}: the COCO subset lists {len(subset)} images (1..{len(subset)})")
    return list(subset[:num_images])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# verifying a folder


def read_manifest(folder: Path) -> dict[str, dict]:
    try:
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}


def check_image(folder: Path, entry: CocoImage, manifest: dict[str, dict]) -> str | None:
    """None when the file is the listed image, else a few words saying what is wrong.

    With a manifest entry (written when the file was extracted from the verified archive) the sha256 must match;
    a file put there by other means is checked by its size in pixels, the only per-image fact COCO publishes.
    """
    path = folder / entry.file_name
    if not path.is_file():
        return "missing"
    known = manifest.get(entry.file_name)
    if known:
        if path.stat().st_size != known.get("bytes"):
            return "size differs from the manifest"
        return None if sha256_file(path) == known.get("sha256") else "sha256 differs from the manifest"
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
    except Exception as exc:  # any decoder error means "not this image"
        return f"unreadable ({type(exc).__name__})"
    return None if size == (entry.width, entry.height) else f"{size[0]}x{size[1]}, listed {entry.width}x{entry.height}"


def verify_folder(folder: str | os.PathLike, entries: Sequence[CocoImage]) -> dict[str, str]:
    """{file name: problem} for every listed image that is not in `folder` as it should be (empty: complete)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = {}
    for entry in entries:
        problem = check_image(folder, entry, manifest)
        if problem:
            problems[entry.file_name] = problem
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# fetching the archive


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def _transfer(url: str, part: Path, have: int, size: int, timeout: float, progress: bool) -> None:
    """Append the rest of `url` to `part` (from byte `have`); returns normally even if the body was cut short."""
    headers = {"User-Agent": "vtok-bench"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        if have and resp.status != 206:  # the server ignored the Range request: start over
            have = 0
        elif have and not str(resp.headers.get("Content-Range", "")).startswith(f"bytes {have}-"):
            have = 0
        with open(part, "ab" if have else "wb") as fh, _progress(size, have, part.name, progress) as bar:
            while block := resp.read(CHUNK):
                fh.write(block)
                fh.flush()
                bar.update(len(block))


def fetch(archive: Archive, dest: str | os.PathLike, *, attempts: int = 5, timeout: float = 30.0,
          progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Download `archive` to `dest`, resuming `<dest>.part`, verified by size and sha256; returns `dest`.

    An interrupted transfer is resumed (Range request) within the same call and by the next call; a complete part
    whose sha256 is wrong is deleted and fetched again. A host that cannot be reached at all fails at once.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    host = urlparse(archive.url).hostname or archive.url
    last = ""
    for _ in range(attempts):
        have = part.stat().st_size if part.is_file() else 0
        if have > archive.size:
            part.unlink()
            have = 0
        if have < archive.size:
            if have:
                log(f"resuming {archive.filename} at {have:,} of {archive.size:,} bytes")
            try:
                _transfer(archive.url, part, have, archive.size, timeout, progress)
            except urllib.error.HTTPError as exc:
                if exc.code == 416:  # our Range is past the end: the part is wrong, fetch it whole
                    part.unlink(missing_ok=True)
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code in (403, 404, 410):
                    break
                continue
            except urllib.error.URLError as exc:
                if not (part.is_file() and part.stat().st_size > have):
                    raise DownloadError(f"cannot reach {host} ({exc.reason}): {_manual_hint(archive)}") from exc
                last = f"connection lost ({exc.reason})"
                continue
            except (OSError, http.client.HTTPException) as exc:
                last = f"connection lost ({type(exc).__name__})"
                continue
            got = part.stat().st_size if part.is_file() else 0
            if got < archive.size:
                last = f"transfer stopped at {got:,} of {archive.size:,} bytes"
                log(f"{archive.filename}: {last}")
                continue
        if part.stat().st_size != archive.size:
            last = f"{part.stat().st_size:,} bytes, expected {archive.size:,}"
            part.unlink()
            continue
        digest = sha256_file(part)
        if digest != archive.sha256:
            last = f"sha256 {digest[:12]}… is not the published {archive.sha256[:12]}…"
            log(f"{archive.filename}: {last}; deleting it and fetching again")
            part.unlink()
            continue
        os.replace(part, dest)
        return dest
    raise DownloadError(f"{archive.url}: download failed after {attempts} attempts ({last}); run the command again "
                        f"to resume, or {_manual_hint(archive)}")


def _manual_hint(archive: Archive) -> str:
    return (f"download {archive.url} ({archive.size:,} bytes, sha256 {archive.sha256}) by other means and pass "
            "--archive PATH, or point VTOK_COCO at a folder holding the images")


def verify_archive(path: Path, archive: Archive) -> None:
    size = path.stat().st_size
    if size != archive.size:
        raise DownloadError(f"{path}: {size:,} bytes, not the published {archive.size:,} of {archive.filename}; "
                            "delete it to download again")
    digest = sha256_file(path)
    if digest != archive.sha256:
        raise DownloadError(f"{path}: sha256 {digest[:12]}… is not the published {archive.sha256[:12]}… of "
                            f"{archive.filename}; delete it to download again")


# ---------------------------------------------------------------------------------------------------------------------
# extracting


def extract(zip_path: Path, folder: Path, entries: Sequence[CocoImage], member_dir: str) -> dict[str, dict]:
    """Write the listed images from the zip into `folder` (atomically, CRC-checked); returns their manifest rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        for entry in entries:
            member = f"{member_dir}/{entry.file_name}" if member_dir else entry.file_name
            if member not in names:
                raise DownloadError(f"{zip_path} has no {member}: not the val2017 archive")
            target = folder / entry.file_name
            tmp = target.with_name(f".{target.name}.tmp")
            digest, nbytes = hashlib.sha256(), 0
            with zf.open(member) as src, open(tmp, "wb") as dst:  # zipfile raises BadZipFile on a CRC mismatch
                while block := src.read(CHUNK):
                    digest.update(block)
                    dst.write(block)
                    nbytes += len(block)
            os.replace(tmp, target)
            rows[entry.file_name] = {"id": entry.id, "bytes": nbytes, "sha256": digest.hexdigest()}
    return rows


def write_manifest(folder: Path, rows: dict[str, dict], archive: Archive) -> None:
    files = {**read_manifest(folder), **rows}
    body = {"source": archive.url, "archive_sha256": archive.sha256, "list": LIST_FILE,
            "note": "sha256 of each image as extracted from the verified archive (written by `vtok download coco`)",
            "files": dict(sorted(files.items()))}
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_FILE)


@dataclass
class CocoDownload:
    folder: Path
    entries: list[CocoImage]
    downloaded: bool = False             # the archive was fetched (in part or whole) by this call
    extracted: list[str] = field(default_factory=list)

    @property
    def ids_sha256(self) -> str:
        return ids_sha256(self.entries)


def download_coco(folder: str | os.PathLike, num_images: int | None = 1000, *,
                  entries: Sequence[CocoImage] | None = None, archive: Archive = VAL2017,
                  archive_path: str | os.PathLike | None = None, keep_archive: bool = False, offline: bool = False,
                  progress: bool = True, log: Callable[[str], None] = print) -> CocoDownload:
    """Make `folder` hold the listed images (the first `num_images` of the subset, or `entries`), verified.

    A folder that already holds them is verified and nothing is fetched. Otherwise the archive is taken from
    `archive_path` (checked against the published size and sha256) or downloaded next to the folder
    (``<folder>/../val2017.zip``; deleted after extraction unless `keep_archive`), and the missing or wrong images
    are extracted. Raises `DownloadError` with one line when that is impossible (offline, unreachable, bad archive).
    """
    folder = Path(folder)
    entries = list(entries) if entries is not None else select(num_images)
    result = CocoDownload(folder, entries)
    todo = verify_folder(folder, entries)
    if not todo:
        return result
    log(f"{len(todo)} of {len(entries)} images to fetch into {folder} "
        f"(e.g. {next(iter(todo))}: {next(iter(todo.values()))})")
    if archive_path is not None:
        zip_path = Path(archive_path)
        if not zip_path.is_file():
            raise DownloadError(f"--archive {zip_path}: no such file")
        verify_archive(zip_path, archive)
    else:
        zip_path = folder.parent / archive.filename
        if zip_path.is_file():
            verify_archive(zip_path, archive)
        elif offline:
            raise DownloadError(f"offline: {len(todo)} images missing in {folder}; {_manual_hint(archive)}")
        else:
            fetch(archive, zip_path, progress=progress, log=log)
            result.downloaded = True
    wanted = [e for e in entries if e.file_name in todo]
    rows = extract(zip_path, folder, wanted, archive.member_dir)
    write_manifest(folder, rows, archive)
    result.extracted = list(rows)
    if archive_path is None and result.downloaded and not keep_archive:
        zip_path.unlink()
    left = verify_folder(folder, entries)
    if left:
        name, problem = next(iter(left.items()))
        raise DownloadError(f"{len(left)} images still wrong after extraction (e.g. {name}: {problem})")
    return result
