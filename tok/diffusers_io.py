"""Loading diffusers models from a release folder strictly, with tok's one error type.

diffusers' own `from_pretrained` only logs missing or unexpected keys and leaves such weights freshly initialised,
so a model is built here from its folder's `config.json` on the meta device and filled through `tok.checkpoint`
(strict, assign). Anything wrong with the files (missing, unreadable, another class, keys or shapes that do not
match) is a `CheckpointError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tok.checkpoint import CheckpointError, build_on_meta, load_strict, read_checkpoint, read_json_file

WEIGHTS_NAME = "diffusion_pytorch_model"


def read_json(path: Path) -> dict[str, Any]:
    """A release folder's JSON object (config.json, model_index.json...); CheckpointError when missing or broken."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; is this the released folder?")
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's state dict: one safetensors file, a sharded safetensors index, or a legacy .bin."""
    single = folder / f"{WEIGHTS_NAME}.safetensors"
    if single.is_file():
        return read_checkpoint(single)
    index_path = folder / f"{WEIGHTS_NAME}.safetensors.index.json"
    if index_path.is_file():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: no weight_map")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_checkpoint(folder / shard))
        absent = sorted(set(weight_map) - set(state))
        if absent:
            raise CheckpointError(f"{index_path}: {len(absent)} indexed keys are in no shard, e.g. {absent[:3]}")
        return state
    legacy = folder / f"{WEIGHTS_NAME}.bin"
    if legacy.is_file():
        return read_checkpoint(legacy)
    raise CheckpointError(f"{folder}: no {WEIGHTS_NAME}.safetensors (or sharded index / .bin); found "
                          f"{sorted(p.name for p in folder.iterdir()) if folder.is_dir() else 'no folder'}")


def load_diffusers_model(cls: type[nn.Module], folder: str | Path, subfolder: str | None = None,
                         torch_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build `cls` from `folder[/subfolder]/config.json` on meta, load its weights strictly, cast to `torch_dtype`;
    returned on the CPU in eval mode without gradients."""
    where = Path(folder) / subfolder if subfolder else Path(folder)
    config = read_json(where / "config.json")
    if config.get("_class_name") != cls.__name__:
        raise CheckpointError(f"{where}/config.json: describes {config.get('_class_name')!r}, expected "
                              f"{cls.__name__}")
    model = build_on_meta(cls.from_config, config)
    load_strict(model, read_weights(where), what=str(where), assign=True)
    leftover = [name for name, t in model.named_buffers() if t.is_meta]
    if leftover:  # a non-persistent buffer a future diffusers adds would otherwise stay unallocated
        raise RuntimeError(f"{cls.__name__} has non-persistent buffers this loader does not materialise: {leftover}")
    # nn.Module.to casts every module like upstream's `model.to(dtype)`, without diffusers' override, which warns
    # about fp32-kept modules even when the model has none.
    return nn.Module.to(model, torch_dtype).eval().requires_grad_(False)
