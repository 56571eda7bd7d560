"""Strict loading of a Tar-SANA release folder (a diffusers `SanaPipeline` folder plus `negative_prompt_embeds.pth`).

diffusers' own `from_pretrained` only logs missing or unexpected keys and leaves such weights freshly initialised,
so models are built here from each subfolder's `config.json` on the meta device and filled through
`tok.checkpoint` (strict, assign). Anything wrong with the folder's files (missing, unreadable, wrong class, keys
that do not match) is a `CheckpointError`. The text encoder and tokenizer subfolders are never read: the glue feeds
features as `prompt_embeds`, and their only other effect upstream (the bf16 cast of the negative embeddings) is
reproduced in `conditioning.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderDC, SanaTransformer2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from tok.checkpoint import CheckpointError, build_on_meta, load_strict, read_checkpoint

PIPELINE_CLASS = "SanaPipeline"
NEGATIVE_EMBEDS_FILE = "negative_prompt_embeds.pth"
WEIGHTS_NAME = "diffusion_pytorch_model"


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; is this a Tar-SANA release folder?")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_model_index(folder: Path) -> dict[str, Any]:
    """model_index.json must describe a SanaPipeline whose transformer and VAE are the classes built here."""
    index = read_json(folder / "model_index.json")
    if index.get("_class_name") != PIPELINE_CLASS:
        raise CheckpointError(f"{folder}/model_index.json: a {index.get('_class_name')!r} folder, expected "
                              f"{PIPELINE_CLASS!r}")
    for part, cls in (("transformer", SanaTransformer2DModel), ("vae", AutoencoderDC)):
        entry = index.get(part)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == cls.__name__):
            raise CheckpointError(f"{folder}/model_index.json: {part} is {entry!r}, expected {cls.__name__}")
    return index


def read_weights(subfolder: Path) -> dict[str, torch.Tensor]:
    """The subfolder's state dict: one safetensors file, a sharded safetensors index, or a legacy .bin."""
    single = subfolder / f"{WEIGHTS_NAME}.safetensors"
    if single.is_file():
        return read_checkpoint(single)
    index_path = subfolder / f"{WEIGHTS_NAME}.safetensors.index.json"
    if index_path.is_file():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: no weight_map")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_checkpoint(subfolder / shard))
        absent = sorted(set(weight_map) - set(state))
        if absent:
            raise CheckpointError(f"{index_path}: {len(absent)} indexed keys are in no shard, e.g. {absent[:3]}")
        return state
    legacy = subfolder / f"{WEIGHTS_NAME}.bin"
    if legacy.is_file():
        return read_checkpoint(legacy)
    raise CheckpointError(f"{subfolder}: no {WEIGHTS_NAME}.safetensors (or sharded index / .bin); found "
                          f"{sorted(p.name for p in subfolder.iterdir()) if subfolder.is_dir() else 'no folder'}")


def load_component(cls: type[nn.Module], folder: Path, subfolder: str, dtype: torch.dtype) -> nn.Module:
    """Build `cls` from `folder/subfolder/config.json` on meta, load its weights strictly, cast to `dtype`."""
    sub = folder / subfolder
    config = read_json(sub / "config.json")
    if config.get("_class_name") != cls.__name__:
        raise CheckpointError(f"{sub}/config.json: describes {config.get('_class_name')!r}, expected {cls.__name__}")
    model = build_on_meta(cls.from_config, config)
    load_strict(model, read_weights(sub), what=str(sub), assign=True)
    leftover = [name for name, t in model.named_buffers() if t.is_meta]
    if leftover:  # a non-persistent buffer a future diffusers adds would otherwise stay unallocated
        raise RuntimeError(f"{cls.__name__} has non-persistent buffers this loader does not materialise: {leftover}")
    # nn.Module.to: casts every module like upstream's `transformer.to(bfloat16)`, without diffusers' override, which
    # warns about fp32-kept modules even when the model has none.
    return nn.Module.to(model, dtype).eval().requires_grad_(False)


def load_scheduler(folder: Path, flow_shift: float | None = None) -> SchedulerMixin:
    """The scheduler class and settings named by `scheduler/scheduler_config.json`; `flow_shift` overrides its shift."""
    path = folder / "scheduler" / "scheduler_config.json"
    config = read_json(path)
    cls = getattr(diffusers, str(config.get("_class_name")), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise CheckpointError(f"{path}: {config.get('_class_name')!r} is not a diffusers scheduler")
    if flow_shift is None:
        return cls.from_config(config)
    scheduler = cls.from_config(config, flow_shift=flow_shift)
    if scheduler.config.get("flow_shift") != flow_shift:
        raise ValueError(f"{cls.__name__} has no flow_shift setting to override")
    return scheduler


def read_negative_embeds(folder: Path, caption_channels: int) -> torch.Tensor:
    """`negative_prompt_embeds.pth`: a plain (L, caption_channels) tensor (Tar adds `[None]` when it uses it)."""
    path = folder / NEGATIVE_EMBEDS_FILE
    neg = read_checkpoint(path)
    if not isinstance(neg, torch.Tensor) or neg.ndim != 2 or neg.shape[1] != caption_channels:
        what = tuple(neg.shape) if isinstance(neg, torch.Tensor) else type(neg).__name__
        raise CheckpointError(f"{path}: expected a (L, {caption_channels}) tensor, got {what}")
    if not neg.is_floating_point():
        raise CheckpointError(f"{path}: expected floating-point embeddings, got {neg.dtype}")
    return neg.float()
