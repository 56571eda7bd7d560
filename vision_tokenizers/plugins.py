"""Plug-in discovery, the same for `pytest bench`, `vtok`, the demo and `TokenizerPlayground`.

A plug-in is a module (or a ``.py`` file) whose import calls `vision_tokenizers.register_tokenizer`. It comes from
``--plugin MODULE_OR_FILE.py`` (repeatable), the environment variable ``VTOK_PLUGINS`` (comma-separated), or an
installed package's entry point in the group ``vtok.tokenizers`` (naming a module, whose import registers, or a
callable, called with no arguments). Each plug-in is loaded once per process; one that fails is a `PluginError` naming
the plug-in and the exception, raised before anything runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType

ENTRY_POINT_GROUP = "vtok.tokenizers"
ENV_VAR = "VTOK_PLUGINS"

_LOADED: dict[str, ModuleType | None] = {}
_CURRENT: list[str] = []


class PluginError(ValueError):
    """A plug-in that cannot be imported or registered: one line naming the plug-in and the cause."""


def current_plugin() -> str | None:
    """The plug-in being loaded right now (named in registrations' origins), if any."""
    return _CURRENT[-1] if _CURRENT else None


@contextlib.contextmanager
def _loading(label: str) -> Iterator[None]:
    _CURRENT.append(label)
    try:
        yield
    except PluginError:
        raise
    except BaseException as exc:  # noqa: BLE001 - a plug-in may raise anything, SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PluginError(f"plug-in {label} failed to load: {type(exc).__name__}"
                          + (f": {detail}" if detail else "")) from exc
    finally:
        _CURRENT.pop()


def _import_file(path: Path) -> ModuleType:
    """Import a plug-in file under a module name of its own (its stem + a hash of its path: two files called
    `my_tokenizer.py` do not collide)."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    name = f"vtok_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_plugin(ref: str) -> ModuleType:
    """Import one plug-in: a path to a ``.py`` file, or a module name importable from ``sys.path``."""
    ref = ref.strip()
    looks_like_file = ref.endswith(".py") or os.sep in ref or "/" in ref
    key = str(Path(ref).expanduser().resolve()) if looks_like_file else ref
    if key in _LOADED:
        return _LOADED[key]
    with _loading(ref):
        if looks_like_file:
            path = Path(key)
            if not path.is_file():
                raise FileNotFoundError(f"no such file {ref} (give a .py file or an importable module name)")
            module = _import_file(path)
        else:
            module = importlib.import_module(ref)
    _LOADED[key] = module
    return module


def load_entry_point(entry_point: metadata.EntryPoint) -> None:
    key = f"entry-point:{entry_point.value}"
    if key in _LOADED:
        return
    with _loading(f"{entry_point.name} = {entry_point.value} (entry point {ENTRY_POINT_GROUP})"):
        target = entry_point.load()
        if callable(target) and not isinstance(target, ModuleType):
            target()
    _LOADED[key] = None


def entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value))


def from_env() -> list[str]:
    return [p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip()]


def discover(plugins: Iterable[str] = ()) -> None:
    """Load the installed entry points, then ``VTOK_PLUGINS``, then `plugins` (``--plugin`` values). Idempotent."""
    from vision_tokenizers.registry import REGISTRY

    REGISTRY._ensure()  # built-ins first, so a plug-in that reuses a built-in name is named as the duplicate
    for entry_point in entry_points():
        load_entry_point(entry_point)
    for ref in [*from_env(), *plugins]:
        load_plugin(ref)
