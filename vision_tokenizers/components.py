"""Sub-models shared by several registered tokenizers (the TA-Tok encoder under three de-tokenizers).

A component is loaded once per run and process, keyed by what it is built from (its kind, the resolved files and
their sizes, device and dtype), never by the tokenizer name that asked first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def component_key(kind: str, files: Iterable[str | Path], device: Any, dtype: Any) -> tuple:
    paths = sorted(Path(f).resolve() for f in files)
    return (kind, tuple((str(p), p.stat().st_size if p.exists() else -1) for p in paths), str(device), str(dtype))


def shared_component(kind: str, files: Iterable[str | Path], device: Any, dtype: Any, build: Callable[[], T]) -> T:
    """The component built by `build()` for these files, device and dtype: built on first use, then reused."""
    key = component_key(kind, files, device, dtype)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def loaded_components() -> list[tuple]:
    return list(_CACHE)


def release_components() -> None:
    """Forget every shared component (frees their memory once no tokenizer holds them)."""
    with _LOCK:
        _CACHE.clear()
