"""Strict loading of a Tar-SANA release folder (a diffusers `SanaPipeline` folder plus `negative_prompt_embeds.pth`).

The networks load through `tok.diffusers_io` (built on meta from their config.json, filled strictly); this module
adds what is SANA's own: the model index check, the scheduler named by the folder, the negative embeddings.
Anything wrong with the folder's files is a `CheckpointError`. The text encoder and tokenizer subfolders are never
read: the glue feeds features as `prompt_embeds`, and their only other effect upstream (the bf16 cast of the
negative embeddings) is reproduced in `conditioning.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderDC, SanaTransformer2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from tok.checkpoint import CheckpointError, read_checkpoint
from tok.diffusers_io import load_diffusers_model, read_json

PIPELINE_CLASS = "SanaPipeline"
NEGATIVE_EMBEDS_FILE = "negative_prompt_embeds.pth"


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


def load_component(cls: type[nn.Module], folder: Path, subfolder: str, dtype: torch.dtype) -> nn.Module:
    """`cls` from `folder/subfolder` (config.json + weights), strictly; see `tok.diffusers_io`."""
    return load_diffusers_model(cls, folder, subfolder, torch_dtype=dtype)


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
