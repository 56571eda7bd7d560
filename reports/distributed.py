"""Runs spread over processes by existing launchers: torchrun ranks on one or more hosts, Slurm array tasks.

* ``torchrun --nproc-per-node N -m pytest bench ...``: rank k measures shard k+1 of N (`shard_indices`, the files
  dealt by the sha256 of their id, as ``--shard k+1/N``; never DistributedSampler, which pads and deals by index) on
  ``cuda:LOCAL_RANK`` when ``--device cuda``. The ranks join one `torch.distributed` process group (gloo on CPU, nccl
  on GPU, from the environment torchrun sets). Rank 0 picks the report directory and hands it to the others; each rank
  appends to its own ``records.rank<k>.jsonl`` in it. At session end every rank waits at a gloo ``monitored_barrier``
  (a rank that died or hangs is named after ``VTOK_BARRIER_TIMEOUT`` seconds, default 3600, instead of a wait without
  end), the ranks' exit statuses go to rank 0, and rank 0 alone reduces each tokenizer's dataset metrics from the
  per-image statistics of all ranks (`results.merge.merged_dataset_records`, as ``python -m reports merge`` does) and
  builds the one report. A rank's own dataset numbers cover its shard only: they are kept as ``rank_dataset`` records
  (never read as dataset metrics) and the tests that check dataset metrics skip on every rank, saying why.
* ``--shard auto``: the shard from a Slurm array (``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1`` of
  ``SLURM_ARRAY_TASK_COUNT``), else from ``RANK`` / ``WORLD_SIZE``; `python -m reports merge` combines the array's
  report directories.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

TIMEOUT_ENV = "VTOK_BARRIER_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0
SLURM_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")
RANK_VARS = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch (from the environment torchrun sets)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank + 1, self.world_size


def _int(environ: Mapping[str, str], name: str, prefix: str = "") -> int:
    value = environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{prefix}{name}={value!r} is not an integer") from None


def torchrun_launch(environ: Mapping[str, str] = os.environ) -> Launch | None:
    """The torchrun launch this process belongs to: RANK, WORLD_SIZE and LOCAL_RANK, or None outside one (or with a
    single process, which is an ordinary run)."""
    if not all(environ.get(name) for name in RANK_VARS):
        return None
    rank, world = _int(environ, "RANK"), _int(environ, "WORLD_SIZE")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} with WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    if world == 1:
        return None
    local = _int(environ, "LOCAL_RANK") if environ.get("LOCAL_RANK") else rank
    return Launch(rank, world, local)


def auto_shard(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """``--shard auto``: (i, N), 1-based, from a Slurm array task, else from torchrun's RANK / WORLD_SIZE. Raises
    ValueError saying what was looked for when neither is there."""
    if environ.get("SLURM_ARRAY_TASK_ID"):
        missing = [name for name in SLURM_VARS if not environ.get(name)]
        if missing:
            raise ValueError(f"--shard auto: SLURM_ARRAY_TASK_ID is set but {', '.join(missing)} is not")
        task, first, count = (_int(environ, name, "--shard auto: ") for name in SLURM_VARS)
        index = task - first + 1
        if not 1 <= index <= count:
            raise ValueError(f"--shard auto: SLURM_ARRAY_TASK_ID={task} with SLURM_ARRAY_TASK_MIN={first} and "
                             f"SLURM_ARRAY_TASK_COUNT={count} is not one of the array's {count} tasks (an array "
                             "with a step, e.g. --array=0-9:2, is not supported: use consecutive task ids)")
        return index, count
    if all(environ.get(name) for name in RANK_VARS):
        rank, world = _int(environ, "RANK", "--shard auto: "), _int(environ, "WORLD_SIZE", "--shard auto: ")
        if not 0 <= rank < world:
            raise ValueError(f"--shard auto: RANK={rank} with WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
        return rank + 1, world
    raise ValueError("--shard auto: found neither a Slurm array task (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, "
                     "SLURM_ARRAY_TASK_COUNT) nor torchrun's RANK and WORLD_SIZE in the environment; pass --shard i/N")


def resolve_shard(option: str | None, launch: Launch | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The ``--shard`` this process runs: "i/N" or None. Under torchrun the rank's own shard (an explicit i/N would
    split a shard again, and an array task running torchrun would give every rank the same shard: both refused)."""
    if launch is not None:
        if option not in (None, "auto"):
            raise ValueError(f"--shard {option} under torchrun: each of the {launch.world_size} ranks measures shard "
                             "RANK+1 of WORLD_SIZE by itself; leave --shard out")
        if option == "auto" and environ.get("SLURM_ARRAY_TASK_ID"):
            raise ValueError("--shard auto under torchrun inside a Slurm array task: both would choose the shard; "
                             "run the array tasks without torchrun, or torchrun without --shard")
        return "{}/{}".format(*launch.shard)
    if option == "auto":
        return "{}/{}".format(*auto_shard(environ))
    return option


def barrier_timeout(environ: Mapping[str, str] = os.environ) -> float:
    value = environ.get(TIMEOUT_ENV)
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a number of seconds > 0")
    return seconds


class RankFailure(RuntimeError):
    """Another rank did not reach the end of the run (it died, or hangs past the barrier timeout)."""


class Group:
    """The torchrun ranks' process group: nccl on GPU, gloo on CPU, and a gloo group for the session's control
    messages (the report directory, the final monitored barrier, the exit statuses)."""

    def __init__(self, launch: Launch, device: str, timeout_s: float) -> None:
        import torch
        import torch.distributed as dist

        self.launch, self.timeout = launch, _dt.timedelta(seconds=timeout_s)
        self.complete = False  # every rank passed the final barrier
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(torch.device(device))
        if not dist.is_initialized():  # torchrun's MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE
            dist.init_process_group("nccl" if cuda else "gloo", timeout=self.timeout)
        self.control = dist.new_group(backend="gloo", timeout=self.timeout) if cuda else dist.group.WORLD

    def share(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def finish(self, exitstatus: int) -> dict[int, int]:
        """Wait for every rank at the end of its session; returns each rank's exit status. Raises RankFailure naming
        the ranks that did not arrive in time (rank 0), or saying that rank 0 did not answer (the others)."""
        import torch.distributed as dist

        try:
            dist.monitored_barrier(group=self.control, timeout=self.timeout, wait_all_ranks=True)
            statuses: list[Any] = [None] * self.launch.world_size
            dist.all_gather_object(statuses, int(exitstatus), group=self.control)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RankFailure(f"rank {self.launch.rank}: not every rank reached the end of the run within "
                              f"{self.timeout.total_seconds():g} s ({TIMEOUT_ENV}): {first}") from exc
        self.complete = True
        return dict(enumerate(statuses))

    def close(self) -> None:
        """Leave together: the other ranks wait here until rank 0 has written the report (torchrun stops every
        rank as soon as one exits with an error, which must not cut rank 0's report short)."""
        import torch.distributed as dist

        if not dist.is_initialized():
            return
        if self.complete:
            try:
                dist.monitored_barrier(group=self.control, timeout=self.timeout, wait_all_ranks=True)
            except RuntimeError:
                pass  # the run's outcome is already decided and reported; only the goodbye failed
        dist.destroy_process_group()


_LAUNCH = pytest.StashKey["Launch | None"]()
_GROUP = pytest.StashKey["Group | None"]()


def launch_of(config: pytest.Config) -> Launch | None:
    return config.stash.get(_LAUNCH, None)


def group_of(config: pytest.Config) -> Group | None:
    return config.stash.get(_GROUP, None)


def per_rank_reason(config: pytest.Config) -> str | None:
    """Why a dataset-level check does not run in this process (a torchrun rank holds one shard), or None."""
    launch = launch_of(config)
    if launch is None:
        return None
    return (f"torchrun rank {launch.rank} of {launch.world_size} measures shard {launch.rank + 1}/"
            f"{launch.world_size} only: dataset metrics are reduced from every rank's per-image statistics into rank "
            "0's report after the run, not checked per shard")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Before the dataset is opened and the report directory chosen: this process's shard and device, and (torchrun,
    not in an xdist worker) the process group."""
    try:
        launch = torchrun_launch()
        shard = resolve_shard(getattr(config.option, "shard", None), launch)
        timeout = barrier_timeout() if launch is not None else None
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if hasattr(config.option, "shard"):
        config.option.shard = shard
    config.stash[_LAUNCH] = launch
    if launch is None:
        return
    if getattr(config.option, "device", None) == "cuda":
        config.option.device = f"cuda:{launch.local_rank}"
    if getattr(config, "workerinput", None) is None:  # an xdist worker gets the directory from its controller
        config.stash[_GROUP] = Group(launch, str(getattr(config.option, "device", None) or "cpu"), timeout)


def pytest_unconfigure(config: pytest.Config) -> None:
    group = config.stash.get(_GROUP, None)
    if group is not None:
        group.close()


__all__ = ["Group", "Launch", "RankFailure", "auto_shard", "group_of", "launch_of", "per_rank_reason",
           "resolve_shard", "torchrun_launch"]
