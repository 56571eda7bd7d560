"""Test-only pytest plugin: a child `pytest bench` run stops itself at a known point, whatever it inherited.

Load it in the child with ``-p tests.interrupt_plugin`` (the child's working directory is the repository root).

* SIGINT gets Python's default handler (`signal.default_int_handler`, which raises KeyboardInterrupt) whatever the
  parent left behind. A job started with ``&`` by a non-interactive shell inherits SIGINT *ignored*, and Python keeps
  an inherited SIG_IGN, so without this a test's SIGINT would do nothing in a suite started as a background job.
* ``VTOK_TEST_INTERRUPT=SIGNAL:K`` (for example ``SIGINT:2`` or ``SIGKILL:1``): right after this process has written
  its K-th image record (`Recorder.image` returned, the line is on disk), the process sends SIGNAL to itself. Images
  resumed from an earlier run are not counted: only records this process writes. No polling, no timing: the signal
  arrives between record K and record K+1 however loaded the machine is.

The benchmark's own Ctrl-C handling is what runs next: SIGINT raises KeyboardInterrupt out of `Recorder.image`, as a
real Ctrl-C between two images would; SIGKILL ends the process on the spot.
"""

from __future__ import annotations

import os
import signal

import pytest

from reports.plugin import Recorder

ENV = "VTOK_TEST_INTERRUPT"
_ORIGINAL = pytest.StashKey()  # the undecorated Recorder.image, put back at unconfigure


def parse(value: str) -> tuple[signal.Signals, int]:
    """``"SIGINT:2"`` -> (SIGINT, 2); a clear error for anything else."""
    name, sep, count = value.partition(":")
    try:
        sig, after = signal.Signals[name.strip().upper()], int(count)
    except (KeyError, ValueError):
        sig, after = None, 0
    if not sep or sig is None or after < 1:
        raise pytest.UsageError(f"{ENV}={value!r}: expected SIGNAL:K with a signal name and K >= 1, e.g. SIGINT:2")
    return sig, after


def signal_after_image_records(sig: signal.Signals, after: int):
    """`Recorder.image`, replaced by a version that raises `sig` in this process once `after` records are written;
    returns the original method (to put back)."""
    original = Recorder.image
    written = 0

    def image(self, *args, **kwargs):
        nonlocal written
        out = original(self, *args, **kwargs)
        written += 1
        if written == after:
            # raise_signal: delivered to this thread before it returns, and a Python handler (KeyboardInterrupt for
            # SIGINT) runs before the next line
            signal.raise_signal(sig)
        return out

    image.__doc__ = original.__doc__
    Recorder.image = image
    return original


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what an interactive foreground start gives Python
    value = os.environ.get(ENV)
    if value:
        config.stash[_ORIGINAL] = signal_after_image_records(*parse(value))


def pytest_unconfigure(config: pytest.Config) -> None:
    original = config.stash.get(_ORIGINAL, None)
    if original is not None:
        Recorder.image = original

