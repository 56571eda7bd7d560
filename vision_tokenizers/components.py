"""Sub-models shared by several registered tokenizers (the TA-Tok encoder under three de-tokenizers).

A component is loaded once while any tokenizer holds it, keyed by what it is built from (its kind, the resolved files
and their sizes, device and dtype), never by the tokenizer name that asked first. The cache holds it weakly: once the
last tokenizer using it is released (the benchmark moves on to the next tokenizer), its memory goes back, so a run
over many tokenizers does not keep a 400M-parameter encoder for the rest of the process.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_CACHE: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def component_key(kind: str, files: Iterable[str | Path], device: Any, dtype: Any) -> tuple:
    paths = sorted(Path(f).resolve() for f in files)
    return (kind, tuple((str(p), p.stat().st_size if p.exists() else -1) for p in paths), str(device), str(dtype))


def shared_component(kind: str, files: Iterable[str | Path], device: Any, dtype: Any, build: Callable[[], T]) -> T:
    """The component built by `build()` for these files, device and dtype: built on first use, then reused while
    anything holds it. `build` must return an object that can be weakly referenced (an `nn.Module` can)."""
    key = component_key(kind, files, device, dtype)
    with _LOCK:
        component = _CACHE.get(key)
        if component is None:
            component = build()
            _CACHE[key] = component
        return component


def loaded_components() -> list[tuple]:
    """Keys of the components something still holds."""
    return list(_CACHE.keys())


def release_components() -> None:
    """Forget every shared component: the next request builds a new one even while old holders live."""
    with _LOCK:
        _CACHE.clear()
