"""Finding weight files: the local weights folder first, then the hub cache / a download, verified by sha256."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from vision_tokenizers.spec import TokenizerSpec, WeightFile

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS_DIR = "model_weights"


class WeightsUnavailable(RuntimeError):
    """The files a tokenizer needs are neither local nor downloadable; the message is one line for the user.

    `short` says the same in a few words with the fix (`vtok download weights NAME`, or the file and its folder):
    what the benchmark's terminal summary prints; the message itself goes into the report.
    """

    def __init__(self, message: str, short: str | None = None) -> None:
        super().__init__(message)
        self.short = short or message


def default_weights_dir() -> Path:
    return Path(os.environ.get("VTOK_WEIGHTS", DEFAULT_WEIGHTS_DIR))


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: str | Path) -> str:
    """sha256 of a weight file, remembered per (path, size, mtime) in ~/.cache/vtok/sha256.json: multi-GB
    checkpoints are hashed once, not on every run. Safe with concurrent processes (torchrun ranks, xdist workers):
    see `_remember`."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = Path(os.environ.get("VTOK_CACHE", Path.home() / ".cache" / "vtok")) / "sha256.json"
    known = _read_json(cache_file).get(key)
    if known is not None:
        return known
    digest = sha256_of(path)  # outside the lock: hashing a checkpoint takes seconds, the update milliseconds
    try:
        _remember(cache_file, key, digest)
    except OSError:  # a read-only home only costs hashing again next time
        pass
    return digest


def _read_json(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(cache_file: Path, key: str, digest: str) -> None:
    """Add one entry to the cache file. Read, merge and replace happen under an exclusive lock on a side file, so a
    process never writes back a copy read before another process's update (which would drop that entry); the
    replace is atomic, so lock-free readers see the old or the new file, never a torn one."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_file.with_name(f".{cache_file.name}.lock"), "a") as lock:
        _lock(lock)
        cache = _read_json(cache_file)  # re-read under the lock: the entries other processes added meanwhile
        cache[key] = digest
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    # closing the file releases the lock


def _lock(fh) -> None:
    """Block until this process holds an exclusive lock on `fh` (released when it is closed)."""
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks a byte range instead
        import msvcrt

        msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def verify(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    actual = sha256_of(path)
    if not actual.startswith(expected):  # a full digest, or the 8-hex prefix torch hub file names carry
        raise WeightsUnavailable(
            f"{path}: sha256 {actual[:12]}… does not match the expected {expected[:12]}…; "
            "delete the file and let it download again, or replace it with the released file")


@functools.cache
def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """One quick TCP connect per host and process, so an offline machine fails in seconds, not after retries."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


class FileUnavailable(FileNotFoundError):
    """One file that is neither local nor downloadable; `why` is a few words for the user."""

    def __init__(self, filename: str, why: str):
        super().__init__(filename)
        self.why = why


def _download(wf: WeightFile, target_dir: Path, offline: bool) -> Path:
    if wf.repo_id:
        from huggingface_hub import hf_hub_download

        # The hub client keeps its own cache (and progress bar); with local_files_only it only looks there.
        return Path(hf_hub_download(wf.repo_id, wf.filename, revision=wf.revision, local_files_only=offline))
    return download_url(wf.url, target_dir / wf.filename, wf.sha256)


def download_url(url: str, target: Path, sha256: str | None = None, *, retries: int = 3, timeout: float = 30.0,
                 chunk: int = 1 << 20) -> Path:
    """Download `url` to `target`, resumably: bytes go to `<target>.part`, a dropped connection (in this call, or a
    killed earlier run) continues from where it stopped with an HTTP Range request, and the file is checked against
    `sha256` before it is renamed into place, so `target` is only ever a complete, verified file."""
    import http.client
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:  # the server ignored the range: start again
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as out, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=target.name, leave=False,
                        disable=not sys.stderr.isatty()) as bar:
                    while block := response.read(chunk):
                        out.write(block)
                        bar.update(len(block))
            if total is not None and part.stat().st_size != total:
                raise http.client.IncompleteRead(b"", total - part.stat().st_size)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # "range not satisfiable": the .part already holds every byte
                break
            raise
        except (OSError, http.client.HTTPException) as exc:
            if attempt == retries:
                raise
            log.warning("download of %s interrupted at %d bytes (%r); resuming", url, part.stat().st_size
                        if part.is_file() else 0, exc)
    if sha256 is not None and not (actual := sha256_of(part)).startswith(sha256):
        part.unlink()
        raise WeightsUnavailable(
            f"{url}: the downloaded file's sha256 {actual[:12]}… does not match the expected {sha256[:12]}… "
            f"(deleted, nothing was loaded); run again to retry, or place the released file at {target}")
    os.replace(part, target)
    return target


def resolve_file(wf: WeightFile, weights_dir: Path, offline: bool = False) -> Path:
    """The local file if present (sha256-checked), else the hub cache or a download; raises `FileUnavailable`."""
    local = weights_dir / wf.local_dir / wf.filename
    if local.is_file():
        verify(local, wf.sha256 if wf.verify_cached else None)
        return local
    if not wf.repo_id and not wf.url:
        raise FileUnavailable(wf.filename, "no public origin")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if wf.repo_id else wf.url
    why = "offline"
    if not offline and not host_reachable(endpoint):
        offline, why = True, f"{urlparse(endpoint).hostname} unreachable"
    if offline and not wf.repo_id:
        raise FileUnavailable(wf.filename, why)
    if wf.repo_id:
        why += ", not in the hub cache"
    try:
        path = _download(wf, weights_dir / wf.local_dir, offline)
    except WeightsUnavailable:  # a download that arrived corrupted: its own message says what to do
        raise
    except Exception as exc:  # network and hub errors come in many types; all mean "not available here"
        log.debug("download of %s failed: %r", wf.origin, exc)
        raise FileUnavailable(wf.filename, why if offline else f"download failed: {type(exc).__name__}") from exc
    verify(path, wf.sha256)
    return path


def resolve_weights(spec: TokenizerSpec, weights_dir: str | Path | None = None,
                    offline: bool | None = None) -> dict[str, Path]:
    """Return ``{filename: path}`` for every file of ``spec``, or raise `WeightsUnavailable` naming what is missing."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    found: dict[str, Path] = {}
    missing: list[WeightFile] = []
    how = ""
    for wf in spec.weights:
        try:
            found[wf.filename] = resolve_file(wf, weights_dir, offline)
        except FileUnavailable as exc:
            missing.append(wf)
            how = how or exc.why
    if missing:
        folders: dict[str, list[WeightFile]] = {}
        for wf in missing:
            folders.setdefault(wf.local_dir, []).append(wf)
        put = "; ".join(f"{', '.join(wf.filename for wf in group)} in {weights_dir / local}/ (from "
                        f"{', '.join(sorted({wf.origin.rsplit('/', 1)[0] for wf in group}))})"
                        for local, group in folders.items())
        gated = sorted({wf.repo_id for wf in missing if wf.gated and wf.repo_id})
        login = (f"; {', '.join(gated)} {'is' if len(gated) == 1 else 'are'} gated: accept the licence on the "
                 f"model page, run `huggingface-cli login`, then `huggingface-cli download <repo>` while online"
                 if gated else "")
        raise WeightsUnavailable(
            f"weights for {spec.name} unavailable ({how}): put {put}; or point --weights-dir/VTOK_WEIGHTS at a "
            f"folder holding {', '.join(f + '/' for f in folders)}{login}",
            short=_missing_short(spec.name, how, folders, weights_dir, gated))
    return found


def _missing_short(name: str, how: str, folders: dict[str, list[WeightFile]], weights_dir: Path,
                   gated: list[str]) -> str:
    """'weights missing: run `vtok download weights NAME`, or put FILE in DIR/': the fix in one short line."""
    missing = [wf for group in folders.values() for wf in group]
    if len(missing) <= 3:
        put = "; ".join(f"{', '.join(wf.filename for wf in group)} in {weights_dir / local}/"
                        for local, group in folders.items())
    else:
        put = f"its {len(missing)} files in " + ", ".join(f"{weights_dir / local}/" for local in folders)
    head = "weights missing" + ("" if how.startswith("offline") else f" ({how})")
    if not any(wf.repo_id or wf.url for wf in missing):
        return f"{head}: put {put}"
    flag = "" if weights_dir == default_weights_dir() else f" --weights-dir {weights_dir}"
    login = f"`huggingface-cli login` (gated: {', '.join(gated)}), then " if gated else ""
    return f"{head}: run {login}`vtok download weights {name}{flag}`, or put {put}"
