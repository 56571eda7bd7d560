"""The one checkpoint path of `tok/`: read `.safetensors` / `.pt` / `.pth` / `.ckpt` safely, load strictly.

Every weight-file problem (missing, truncated or unreadable file, wrong layout, missing / unexpected / mis-shaped keys)
raises `CheckpointError`; callers turn exactly that into "these weights are unusable" and let anything else surface
as the bug it is.

Pickled checkpoints are read with ``torch.load(weights_only=True)``. Released training checkpoints often carry
non-tensor state besides the weights (Lightning's `hyper_parameters`, callbacks, optimizer state, an
`argparse.Namespace`), which that unpickler refuses. For those, every global the file names is replaced by an inert
placeholder (`Inert`) that records its arguments and never runs anything: tensors are rebuilt for real, the rest
becomes data. There is no unsafe fallback.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
# Globals whose only use in a pickle is running something; torch's safe loader blocks the first group outright.
_SYSTEM_MODULES = ("sys", "os", "posix", "nt", "subprocess", "shutil", "socket")
_CODE_RUNNERS = ("builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.getattr",
                 "builtins.open", "runpy.", "importlib.", "pty.", "webbrowser.")


class CheckpointError(RuntimeError):
    """A weight file that cannot be used: unreadable, not the expected layout, or not matching the model."""

    def one_line(self, limit: int = 240) -> str:
        text = " ".join(str(self).split())
        return text if len(text) <= limit else text[:limit - 1] + "…"


class Inert:
    """Stand-in for a global named in a checkpoint that torch's safe unpickler does not allow.

    Calling, constructing or restoring it only stores the arguments, so nothing from the file is executed.
    `name` is the dotted name the file used (e.g. ``argparse.Namespace``).
    """

    name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __getitem__(self, key: Any) -> Any:
        """Mapping-like access to restored attributes (an `argparse.Namespace` keeps its fields in `state`)."""
        if isinstance(self.state, Mapping):
            return self.state[key]
        raise KeyError(key)

    def fields(self) -> dict[str, Any]:
        """The restored attributes (pickle state) or keyword arguments, whichever the file used."""
        if isinstance(self.state, Mapping):
            return dict(self.state)
        return dict(self.kwargs)

    def __repr__(self) -> str:
        return f"<inert {self.name}>"


def _inert_class(dotted: str) -> type[Inert]:
    return type(f"Inert[{dotted}]", (Inert,), {"name": dotted, "__module__": __name__})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # non-tensor state: retried below with inert placeholders
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {_first_line(exc)}); the file is "
                              "truncated or not a PyTorch checkpoint: delete it and download it again") from exc
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # legacy (non-zip) pickles cannot be scanned without running the pickle
        raise CheckpointError(f"{path}: holds objects the safe loader refuses and cannot be scanned "
                              f"({_first_line(exc)}); re-save its tensors with torch.save") from exc
    dangerous = [n for n in names if n.split(".")[0] in _SYSTEM_MODULES or n.startswith(_CODE_RUNNERS)]
    if dangerous:
        raise CheckpointError(f"{path}: refused: its pickle calls {', '.join(dangerous)}, which could run a "
                              "command (nothing was run); do not use this file")
    placeholders = [(_inert_class(name), name) for name in names]
    try:
        with torch.serialization.safe_globals(placeholders):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable even with inert placeholders for {', '.join(names)} "
                              f"({type(exc).__name__}: {_first_line(exc)})") from exc


def read_checkpoint(path: str | Path) -> Any:
    """The object stored in a checkpoint file, on the CPU, read without executing code from the file.

    `.safetensors` gives a ``{name: tensor}`` dict; pickled formats give whatever was saved (usually nested
    dicts), with unknown globals as `Inert` placeholders.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable safetensors file ({_first_line(exc)}); delete it and "
                                  "download it again") from exc
    return _torch_load(path)


def read_json_file(path: str | Path) -> Any:
    """A JSON file shipped with a checkpoint (config.json...); unreadable or truncated -> CheckpointError."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({type(exc).__name__}: {_first_line(exc)}); delete it "
                              "and download it again") from exc


def state_dict_at(obj: Any, *keys: str, path: str | Path = "") -> dict[str, torch.Tensor]:
    """``obj[k1][k2]...`` as a tensor dict, or CheckpointError naming the layout that was expected."""
    node = obj
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            where = "".join(f"[{k!r}]" for k in keys[:depth + 1])
            top = sorted(map(str, node))[:8] if isinstance(node, Mapping) else type(node).__name__
            raise CheckpointError(f"{path}: expected a checkpoint with {where} (found {top}); is this the "
                                  "released file?")
        node = node[key]
    if not isinstance(node, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, got {type(node).__name__}")
    return dict(node)


def read_state_dict(path: str | Path, *keys: str) -> dict[str, torch.Tensor]:
    """The tensor dict of a checkpoint, at ``keys`` inside it (e.g. ``"model", "sd"``); top level when none."""
    return state_dict_at(read_checkpoint(path), *keys, path=path)


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … (+{len(names) - limit} more)" if len(names) > limit else "")


def state_dict_problems(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable missing / unexpected / mis-shaped keys of `state` against `model` (empty when it fits)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} != {expected[k]}"
                    for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    return [f"{label} ({len(items)}): {_listing(items)}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if items]


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, what: str = "checkpoint",
                assign: bool = False) -> nn.Module:
    """`load_state_dict(strict=True)`, raising CheckpointError that names every mismatching key.

    ``assign=True`` fills a model built on the meta device without allocating random weights first.
    """
    problems = state_dict_problems(model, state)
    if problems:
        raise CheckpointError(f"{what} does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True, assign=assign)
    return model


def build_on_meta(factory, *args: Any, **kwargs: Any) -> nn.Module:
    """Construct a model on the meta device: no random init of weights that a checkpoint overwrites anyway."""
    with torch.device("meta"):
        return factory(*args, **kwargs)
