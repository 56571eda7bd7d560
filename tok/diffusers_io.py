"""Loading diffusers models from a release folder, with tok's one error type and a strict key check.

diffusers' `from_pretrained` warns (and keeps random weights) for some missing keys, and raises many error types
for a broken folder; here every weight-file problem becomes `tok.checkpoint.CheckpointError` and the loaded model's
keys must equal the file's keys exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tok.checkpoint import CheckpointError

log = logging.getLogger(__name__)

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def _file_keys(folder: Path) -> set[str] | None:
    """Tensor names stored in the folder's safetensors weights (read from the header, no tensor is loaded)."""
    from safetensors import safe_open

    for name in WEIGHT_NAMES:
        path = folder / name
        if path.is_file():
            with safe_open(str(path), framework="pt") as fh:
                return set(fh.keys())
    return None


def load_diffusers_model(cls: Any, folder: str | Path, subfolder: str | None = None,
                         torch_dtype: torch.dtype = torch.float32, **kwargs: Any) -> Any:
    """`cls.from_pretrained(folder, subfolder=...)`, strict: any key difference raises CheckpointError."""
    where = Path(folder) / subfolder if subfolder else Path(folder)
    try:
        model = cls.from_pretrained(str(folder), subfolder=subfolder, torch_dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{where}: cannot load {cls.__name__} ({type(exc).__name__}: {text})") from exc
    try:
        stored = _file_keys(where)
    except Exception as exc:  # a header that diffusers could read but safetensors cannot is a broken file too
        raise CheckpointError(f"{where}: unreadable weights header ({exc})") from exc
    if stored is not None:
        own = set(model.state_dict())
        missing, unexpected = sorted(own - stored), sorted(stored - own)
        if missing or unexpected:
            raise CheckpointError(f"{where}: weights do not match {cls.__name__}: missing {missing[:8]}, "
                                  f"unexpected {unexpected[:8]}")
    return model.eval().requires_grad_(False)
