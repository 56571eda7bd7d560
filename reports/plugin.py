"""The reporting pytest plugin (loaded with ``-p reports.plugin``): the `record` and `report_dir` fixtures, the
per-run JSONL sink and the session-end report.

* The report directory is resolved once per session: ``--report-dir`` (relative to the invocation directory), else
  ``<rootdir>/results/<YYYYmmdd-HHMMSS>/`` with ``results/latest`` pointed at it (a symlink replaced atomically;
  a text file holding the directory name where symlinks are not possible).
* The directory and its ``run`` record are written lazily, by the first record: a session that records nothing
  (e.g. the suite's own tests) leaves no directory behind.
* Under pytest-xdist each worker appends to its own ``records.<workerid>.jsonl`` (the controller's file is
  ``records.jsonl``); only the controller builds the report, from every ``records*.jsonl``.
* Under torchrun (`reports.distributed`) rank 0 chooses the directory and every rank appends to its own
  ``records.rank<k>.jsonl`` there; after the ranks' final barrier rank 0 alone writes each tokenizer's dataset record,
  reduced from the per-image statistics of all ranks, and builds the report.
* At session end the report is built with `vision_tokenizers.results.build_report`; the terminal then shows its
  quality table, one line per tokenizer that was not run (with the short fix) and ``vtok report: <dir>/summary.md``.
  A failing report prints an error line and never changes the exit status, which reflects the tests only.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# the torchrun / --shard auto hooks come with the report plugin (imported lazily below, so that pytest registers it
# first and its asserts are rewritten like any plug-in's)
pytest_plugins = ["reports.distributed"]

OPTIONS = ("tokenizers", "dataset", "num_images", "resolution", "device", "dtype", "batch_size", "weights_dir",
           "report_dir", "save_images", "thresholds", "offline")


def _option_names(config: pytest.Config) -> tuple[str, ...]:
    """The dests of the "vtok" option group (conftest.py), falling back to the known list."""
    try:
        group = config._parser.getgroup("vtok")
        names = tuple(opt.dest for opt in group.options)
    except Exception:  # noqa: BLE001 - private API; the fixed list is good enough
        names = ()
    return names or OPTIONS


def _distributed():
    from reports import distributed

    return distributed


def _results():
    from vision_tokenizers import results  # lazy: keeps `pytest --help` and plugin import light

    return results


def _number(value: Any) -> Any:
    """Tensors / numpy scalars -> float; ints and floats as they are."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return float(value)


def _to_pil(image: Any):
    """A PIL image, or a (3,H,W) / (H,W,3) uint8 or [0,1] float array / tensor, as an RGB PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    import numpy as np

    if hasattr(image, "detach"):
        image = image.detach().cpu()
        image = image.float().numpy() if str(image.dtype).startswith("torch.bfloat") else image.numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr).convert("RGB")


class Recorder:
    """Appends records to this process's JSONL file in the report directory (the `record` fixture).

    Every record gets ``ts`` (epoch seconds) so several files merge in order. The first record creates the
    directory and writes the session's ``run`` record before itself.
    """

    def __init__(self, report_dir: Path, filename: str = "records.jsonl", run: Mapping | None = None,
                 on_create=None, shard_of_ranks: bool = False) -> None:
        self.report_dir = Path(report_dir)
        self.path = self.report_dir / filename
        self._run = dict(run or {"type": "run"})
        self._on_create = on_create
        self._started = False
        self._lock = threading.RLock()
        self.count = 0
        self.protocol_id: str | None = None  # set by `protocol`; referenced by every later result row
        self.configs: dict[str, str] = {}  # tokenizer -> config id of its `tokenizer` record
        # a torchrun rank: its dataset numbers cover its shard only, kept as `rank_dataset` records (rank 0 writes the
        # dataset records, reduced from every rank's per-image statistics)
        self.shard_of_ranks = shard_of_ranks

    # -- plumbing
    def ensure(self) -> Path:
        """Create the report directory and write the run record (once); returns the directory."""
        with self._lock:
            if not self._started:
                self.report_dir.mkdir(parents=True, exist_ok=True)
                self._started = True
                torn = _drop_torn_tail(self.path)
                run = dict(self._run)
                run.setdefault("host", _host(str((run.get("options") or {}).get("device") or "cpu")))
                self._append(run)
                if torn:
                    self._append({"type": "store", "event": "torn_line_dropped", "file": self.path.name,
                                  "bytes": torn, "kept_in": f"{self.path.name}.torn"})
                if self._on_create is not None:
                    self._on_create()
        return self.report_dir

    @property
    def started(self) -> bool:
        return self._started

    def _append(self, obj: Mapping) -> dict:
        obj = {**obj, "ts": time.time()}
        _results().append_record(self.path, obj)
        return obj

    def __call__(self, **obj: Any) -> dict:
        """Append a record of any type: ``record(type="image", tokenizer=..., ...)``. Returns what was written."""
        if "type" not in obj:
            raise ValueError("a record needs a 'type'")
        if obj["type"] in ROW_TYPES:  # rows say under which protocol and tokenizer config they were measured
            if self.protocol_id is not None:
                obj.setdefault("protocol", self.protocol_id)
            if obj.get("tokenizer") in self.configs:
                obj.setdefault("config", self.configs[obj["tokenizer"]])
        with self._lock:
            self.ensure()
            out = self._append(obj)
            self.count += 1
        return out

    # -- typed records
    def image(self, tokenizer: str, image_id: str, metrics: Mapping[str, Any], *, dataset: str | None = None,
              resolution: int | None = None, recon: Any = None, original: Any = None, **extra: Any) -> dict:
        """Per-image metrics. `recon` / `original`: a path relative to the report dir, or an image (PIL, or a
        uint8 / [0,1] array or tensor, CHW or HWC) saved as ``recon/<tokenizer>/<image_id>.png`` and
        ``originals/<resolution>/<image_id>.png`` (an original already saved there is not written again)."""
        metrics = {str(k): _number(v) for k, v in metrics.items() if v is not None}
        if recon is not None and not isinstance(recon, (str, os.PathLike)):
            recon = self.save_image(recon, f"recon/{tokenizer}/{image_id}.png")
        if original is not None and not isinstance(original, (str, os.PathLike)):
            pil = _to_pil(original)
            rel = f"originals/{resolution or pil.width}/{image_id}.png"
            original = rel if (self.report_dir / rel).is_file() else self.save_image(pil, rel)
        obj = {"type": "image", "tokenizer": tokenizer, "image_id": str(image_id), "dataset": dataset,
               "resolution": resolution, "metrics": metrics, "recon": _posix(recon), "original": _posix(original)}
        return self(**{k: v for k, v in obj.items() if v is not None}, **extra)

    def dataset(self, tokenizer: str, metrics: Mapping[str, Any], *, meta: Mapping[str, Any] | None = None,
                **extra: Any) -> dict:
        """Dataset-level metrics (fid, codebook_usage, unique_codes, entropy_bits, perplexity, bpp) and their
        meta (fid_backend, n, ...)."""
        metrics = {str(k): _number(v) for k, v in metrics.items() if v is not None}
        kind = "rank_dataset" if self.shard_of_ranks else "dataset"
        return self(type=kind, tokenizer=tokenizer, metrics=metrics, meta=dict(meta or {}), **extra)

    def timing(self, tokenizer: str, stage: str, batch_size: int, median_s: float, iqr_s: float, rounds: int,
               device: str, **extra: Any) -> dict:
        """One batch's timing: median and IQR over `rounds` (warm-up excluded, device synchronised)."""
        if stage not in ("encode", "decode"):
            raise ValueError(f"stage must be 'encode' or 'decode', not {stage!r}")
        return self(type="timing", tokenizer=tokenizer, stage=stage, batch_size=int(batch_size),
                    median_s=float(_number(median_s)), iqr_s=float(_number(iqr_s)), rounds=int(rounds),
                    device=str(device), **extra)

    def tokenizer(self, tokenizer: str, facts: Mapping[str, Any], *, settings: Mapping[str, Any] | None = None,
                  weights: Mapping[str, Any] | None = None, **extra: Any) -> dict:
        """What the run knew about a tokenizer (spec facts, published numbers, generation settings, weights'
        sha256): the report is built from this record, never from the registry of whatever code renders it.
        Its ``config`` id (settings, checkpoint sha256s, seed, a plug-in's code identity) is attached to the
        tokenizer's later rows."""
        config = _results().config_id(settings or {}, weights or {}, extra.get("seed"), extra.get("code"))
        self.configs[tokenizer] = config
        return self(type="tokenizer", tokenizer=tokenizer, facts=dict(facts),
                    settings=dict(settings or {}), weights=dict(weights or {}), config=config, **extra)

    def protocol(self, fields: Mapping[str, Any]) -> str:
        """Write the run's protocol record (once per distinct protocol) and reference it from every later row."""
        pid = _results().short_hash(fields)
        with self._lock:
            if pid != self.protocol_id:
                self(type="protocol", id=pid, fields=dict(fields))
                self.protocol_id = pid
        return pid

    def statistics(self, tokenizer: str, image_id: str, arrays: Mapping[str, Any],
                   codebooks: Mapping[str, int] | None = None) -> str:
        """Save one image's per-image statistics (Inception features, ids) as ``stats/<tokenizer>/<config>/<id>.npz``,
        atomically; returns the path for its image record (``stats=``). Written before the record, so a record
        never points at a missing file."""
        import numpy as np

        self.ensure()
        arrays = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in arrays.items()}
        results = _results()
        relpath = results.stats_relpath(tokenizer, str(image_id), self.configs.get(tokenizer))
        return results.save_image_stats(self.report_dir, relpath, arrays, codebooks)

    def seeded(self, tokenizer: str, run_seed: int) -> set[str]:
        """Images already decoded with `run_seed` (an extra seed of --seeds K) under this run's protocol and config."""
        return _results().seeded_images(self.report_dir, tokenizer, run_seed, protocol=self.protocol_id,
                                        config=self.configs.get(tokenizer))

    def resumable(self, tokenizer: str, **query: Any) -> dict[str, dict]:
        """Image records of `tokenizer` already measured under this run's protocol and config (see
        `results.resumable_images`): a resumed run computes only the other images."""
        return _results().resumable_images(self.report_dir, tokenizer, protocol=self.protocol_id,
                                           config=self.configs.get(tokenizer), **query)

    def skip(self, tokenizer: str | None, what: str, reason: str, **extra: Any) -> dict:
        """Something not measured, with why: what = "tokenizer" | "metric:<name>" | "image" (+ image_id=...)."""
        return self(type="skip", tokenizer=tokenizer, what=what, reason=str(reason), **extra)

    def save_image(self, image: Any, relpath: str | os.PathLike) -> str:
        """Save `image` as PNG under the report dir (atomically); returns `relpath` (posix) for a record."""
        rel = Path(relpath)
        target = (self.report_dir / rel).resolve()
        if rel.is_absolute() or not target.is_relative_to(self.report_dir.resolve()):
            raise ValueError(f"{relpath!r} is not inside the report directory")
        self.ensure()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        _to_pil(image).save(tmp, format="PNG")
        os.replace(tmp, target)
        return rel.as_posix()

    def recorded_evaluation(self, tokenizer: str, **query: Any):
        """The complete evaluation already in this report dir (see `results.recorded_evaluation`), or None."""
        if not self.report_dir.is_dir():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _results().recorded_evaluation(self.report_dir, tokenizer, **query)

    def completed_images(self, tokenizer: str, metrics: Iterable[str] = ()) -> set[str]:
        """Image ids already recorded for `tokenizer` in this report dir (every process's file): resume a rerun."""
        if not self.report_dir.is_dir():
            return set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _results().completed_images(self.report_dir, tokenizer, metrics)


ROW_TYPES = ("image", "dataset", "rank_dataset", "timing", "skip", "seed_image")


def _drop_torn_tail(path: Path) -> int:
    """A killed writer can leave a partial last line: move it to ``<file>.torn`` so the file is whole JSONL again.
    Returns the number of bytes moved (0 when the file ends in a newline or does not exist)."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if not size:
                return 0
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return 0
            f.seek(0)
            data = f.read()
            keep = data.rfind(b"\n") + 1
            with open(path.with_name(path.name + ".torn"), "ab") as torn:
                torn.write(data[keep:] + b"\n")
            f.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0


def _posix(path: Any) -> str | None:
    return None if path is None else Path(path).as_posix()


def _host(device: str) -> dict:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(terse=True),
                            "hostname": socket.gethostname(), "device": device}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except Exception as exc:  # noqa: BLE001 - host info is best effort
        info["torch"] = f"unavailable ({type(exc).__name__})"
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode == 0:
            info["git"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


# ------------------------------------------------------------------------------------------------ session state


@dataclass
class _State:
    report_dir: Path
    explicit: bool
    worker: str | None
    session: str
    started: str
    rank: int | None = None  # torchrun rank; None outside torchrun
    recorder: Recorder | None = None
    files: dict[str, Path] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def builds(self) -> bool:
        """This process builds the report: not an xdist worker, and rank 0 under torchrun."""
        return self.worker is None and not self.rank

    @property
    def filename(self) -> str:
        rank = f"rank{self.rank}" if self.rank is not None else ""
        return ".".join(part for part in ("records", rank, self.worker or "", "jsonl") if part)


_STATE = pytest.StashKey[_State]()


def _timestamp_dir(root: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, n = root / stamp, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stamp}-{n}"
    return candidate


def point_latest(report_dir: Path, link: Path) -> Path:
    """Point `link` (results/latest) at `report_dir`: a relative symlink swapped in atomically, or, where symlinks
    fail, a text file holding the directory name."""
    target = os.path.relpath(report_dir, link.parent)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.write_text(target + "\n", encoding="utf-8")
        os.replace(tmp, link)
    return link


def _update_latest(state: _State) -> None:
    if not state.explicit and state.builds and state.report_dir.is_dir():
        try:
            point_latest(state.report_dir, state.report_dir.parent / "latest")
        except OSError as exc:
            state.warnings.append(f"could not update {state.report_dir.parent / 'latest'}: {exc}")


def pytest_configure(config: pytest.Config) -> None:
    launch = _distributed().launch_of(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "vtok_report_dir" in workerinput:
        state = _State(Path(workerinput["vtok_report_dir"]), bool(workerinput["vtok_explicit"]),
                       str(workerinput.get("workerid", "worker")), workerinput["vtok_session"],
                       workerinput["vtok_started"])
    else:
        option = config.getoption("report_dir", default=None)
        if option:
            report_dir = Path(config.invocation_params.dir, option).absolute()
        else:
            report_dir = _timestamp_dir(Path(config.rootpath) / "results")
        state = _State(report_dir, bool(option), None, uuid.uuid4().hex[:12],
                       _dt.datetime.now().astimezone().isoformat(timespec="seconds"))
        group = _distributed().group_of(config)
        if group is not None:  # every rank writes into rank 0's directory, under rank 0's session
            chosen = group.share((str(state.report_dir), state.explicit, state.session, state.started))
            state = _State(Path(chosen[0]), chosen[1], None, chosen[2], chosen[3])
    if launch is not None:
        state.rank = launch.rank
    config.stash[_STATE] = state


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: hand the report directory and session id to each worker."""
    state = node.config.stash[_STATE]
    node.workerinput.update(vtok_report_dir=str(state.report_dir), vtok_explicit=state.explicit,
                            vtok_session=state.session, vtok_started=state.started)


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    state = config.stash[_STATE]
    options = {name: _clean(config.getoption(name, default=None)) for name in _option_names(config)}
    run = {"type": "run", "started": state.started, "session": state.session,
           "argv": [str(a) for a in config.invocation_params.args], "options": options}
    if state.worker:
        run["worker"] = state.worker
    launch = _distributed().launch_of(config)
    if launch is not None:
        run.update(rank=launch.rank, world_size=launch.world_size)
    state.recorder = Recorder(state.report_dir, state.filename, run, on_create=lambda: _update_latest(state),
                              shard_of_ranks=launch is not None)


@pytest.fixture(scope="session")
def record(request: pytest.FixtureRequest) -> Recorder:
    """Session-wide recorder: ``record.image(...)``, ``.dataset(...)``, ``.timing(...)``, ``.skip(...)``,
    ``.save_image(img, relpath)``, ``.completed_images(tokenizer)`` and ``record(type=..., **fields)``."""
    return request.config.stash[_STATE].recorder


@pytest.fixture(scope="session")
def report_dir(record: Recorder) -> Path:
    """This session's report directory (created, with its run record, on first use)."""
    return record.ensure()


def _has_records(report_dir: Path) -> bool:
    results = _results()
    if not results.record_files(report_dir):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return any(r.get("type") != "run" for r in results.read_records(report_dir))


def _wait_for_ranks(session: pytest.Session, state: _State, exitstatus: int) -> None:
    """torchrun: every rank waits for the others here; rank 0 names each rank that failed and fails with it."""
    group = _distributed().group_of(session.config)
    if group is None:
        return
    try:
        statuses = group.finish(exitstatus)
    except _distributed().RankFailure as exc:
        failed = [str(exc)]
    else:
        failed = [f"rank {rank} of {len(statuses)} ended with exit status {status} (its own output above says why)"
                  for rank, status in statuses.items() if status != 0 and rank != state.rank and state.builds]
    for line in failed:
        session.config.get_terminal_writer().line(f"vtok: {line}", red=True, bold=True)
    if failed and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _merge_rank_datasets(state: _State) -> None:
    """torchrun, rank 0 after the barrier: one dataset record per tokenizer the ranks measured, reduced from the
    per-image statistics of every rank (as `python -m reports merge` does), never from the ranks' shard numbers."""
    from vision_tokenizers.results.merge import merged_dataset_records

    results = _results()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = results.read_records(state.report_dir)
    shards = [{**r, "type": "dataset"} for r in records if r.get("type") == "rank_dataset"]
    names = {str(r.get("tokenizer")) for r in shards}
    if not names:
        return
    rows = [r for r in records if r.get("tokenizer") in names and r.get("type") in ("image", "seed_image")]
    state.recorder.ensure()
    for rec in merged_dataset_records(state.report_dir, rows + shards):
        state.recorder._append(rec)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None:
        return
    _wait_for_ranks(session, state, int(exitstatus))
    if not state.builds:
        return
    try:
        if not state.report_dir.is_dir() or not _has_records(state.report_dir):
            return
        if state.rank is not None and state.recorder is not None:
            _merge_rank_datasets(state)
        _update_latest(state)
        if exitstatus == pytest.ExitCode.INTERRUPTED and state.recorder is not None and state.recorder.started:
            # Ctrl-C: the report of what is done is still written, and says so; rerunning the command resumes
            state.recorder(type="interrupted", session=state.session)
        results = _results()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                state.files = results.build_report(state.report_dir)
            except results.MixedProtocols as exc:  # this run's rows beside older ones: listed, not refused
                state.warnings.append(f"{exc}\n(summary.md lists them together; `python -m reports` refuses "
                                      "without --allow-mixed)")
                state.files = results.build_report(state.report_dir, allow_mixed=True)
        state.warnings += [str(w.message) for w in caught]
    except Exception as exc:  # noqa: BLE001 - a broken report must not hide or change the test results
        state.error = f"{type(exc).__name__}: {exc}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.builds:
        return
    for message in state.warnings:
        terminalreporter.write_line(f"vtok report: warning: {message}", yellow=True)
    if state.error:
        terminalreporter.write_line(f"vtok report: ERROR building the report in {state.report_dir}: {state.error}",
                                    red=True, bold=True)
    elif "markdown" in state.files:
        _write_summary(terminalreporter, state.files.get("json"))
        terminalreporter.write_line(f"vtok report: {state.files['markdown']}", bold=True)


def _write_summary(terminalreporter, report_json: Path | None) -> None:
    """The quality table and the tokenizers not run, from the report just built (report.json: the numbers of
    summary.md), so the result of the run is on the screen and not only in a file."""
    import json

    from vision_tokenizers.results.terminal import terminal_lines

    try:
        report = json.loads(Path(report_json).read_text(encoding="utf-8"))
        lines = terminal_lines(report, width=max(terminalreporter.config.get_terminal_writer().fullwidth, 80))
    except Exception as exc:  # noqa: BLE001 - the files are written; a summary that cannot be shown must not fail
        terminalreporter.write_line(f"vtok report: could not summarise {report_json}: {type(exc).__name__}: {exc}",
                                    yellow=True)
        return
    terminalreporter.write_sep("=", "vtok summary")
    for line in lines:
        terminalreporter.write_line(line, bold=line.startswith(("vtok:", "tokenizer ")))


__all__ = ["Recorder", "point_latest", "record", "report_dir"]
