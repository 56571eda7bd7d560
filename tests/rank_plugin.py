"""Test-only pytest plugin for torchrun runs: one rank fails at a known point. Load it in the child with
``-p tests.rank_plugin`` (the child's working directory is the repository root).

* ``VTOK_TEST_RANK_FAIL=K:error``: on rank K, the first image record raises RuntimeError("injected failure on rank
  K"): that rank's tests fail, and it still reaches the end of its session (the ranks' final barrier).
* ``VTOK_TEST_RANK_FAIL=K:crash``: rank K prints "injected crash on rank K" and ends with exit status 3 at the start
  of its session end, before the ranks' final barrier: the others wait there for a rank that never comes.
* ``VTOK_TEST_SHOW_SHARD=1``: the report header lists this process's shard and image ids ("vtok-test shard: ...").

No sleeps and no timing: the failure happens at the same point of the run however loaded the machine is.
"""

from __future__ import annotations

import os
import sys

import pytest

from reports.plugin import Recorder

ENV = "VTOK_TEST_RANK_FAIL"
_ORIGINAL = pytest.StashKey()


def _target() -> tuple[int, str] | None:
    value = os.environ.get(ENV)
    if not value:
        return None
    rank, _, mode = value.partition(":")
    if not rank.isdigit() or mode not in ("error", "crash"):
        raise pytest.UsageError(f"{ENV}={value!r}: expected K:error or K:crash")
    return (int(rank), mode) if int(rank) == int(os.environ.get("RANK", "-1")) else None


def pytest_configure(config: pytest.Config) -> None:
    target = _target()
    if target is None or target[1] != "error":
        return
    original = config.stash[_ORIGINAL] = Recorder.image

    def image(self, *args, **kwargs):
        raise RuntimeError(f"injected failure on rank {target[0]}")
    Recorder.image = image
    image.__wrapped__ = original


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    target = _target()
    if target is not None and target[1] == "crash":
        print(f"injected crash on rank {target[0]}", file=sys.stderr, flush=True)
        os._exit(3)


def pytest_report_header(config: pytest.Config) -> str | None:
    if not os.environ.get("VTOK_TEST_SHOW_SHARD"):
        return None
    from fixtures.images import _IMAGES

    images = config.stash[_IMAGES]
    return f"vtok-test shard: {config.getoption('shard')} ids: {','.join(images.ids)}"


def pytest_unconfigure(config: pytest.Config) -> None:
    original = config.stash.get(_ORIGINAL, None)
    if original is not None:
        Recorder.image = original
