"""Loading an Open-MAGVIT2 Lightning checkpoint (`imagenet_256_L.ckpt` layout) into `Magvit2Tokenizer`.

Upstream inference (`reconstruct.py`, `evaluation.py`) loads with `strict=False` and then runs inside `ema_scope()`,
i.e. with the LitEma shadows. LitEma stores the shadow of parameter `n` as buffer `n.replace(".", "")`, so in the
checkpoint it is `"model_ema." + n.replace(".", "")`. We pick those for our (upstream-named) parameters and load with
`strict=True`; every other key must belong to a known training-only group, or we raise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tok.checkpoint import CheckpointError, load_strict, read_checkpoint, read_json_file, state_dict_at

log = logging.getLogger(__name__)

EMA_PREFIX = "model_ema."

# Training-only key groups of the released checkpoint: (group name, reason, key prefix).
_TRAINING_ONLY_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("loss.perceptual_loss", "LPIPS (VGG16 + heads) of the training loss", "loss.perceptual_loss."),
    ("loss.discriminator", "PatchGAN discriminator of the training loss, BatchNorm stats included",
     "loss.discriminator."),
    ("model_ema.lossdiscriminator", "EMA shadows of the discriminator", "model_ema.lossdiscriminator"),
)
_EMA_SCALARS = ("model_ema.decay", "model_ema.num_updates")


@dataclass
class LoadReport:
    """What was loaded and what was dropped (group name -> reason, keys)."""

    source: str  # "ema" or "raw"
    loaded: list[str]
    dropped: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def dropped_counts(self) -> dict[str, int]:
        return {group: len(keys) for group, (_, keys) in self.dropped.items()}

    def summary(self) -> str:
        parts = [f"{group}: {len(keys)} ({reason})" for group, (reason, keys) in self.dropped.items()]
        return f"loaded {len(self.loaded)} {self.source} tensors; dropped " + "; ".join(parts)


def ema_name(param_name: str) -> str:
    return EMA_PREFIX + param_name.replace(".", "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """`ck["state_dict"]` of a Lightning checkpoint, read without executing code from the file.

    Lightning also stores `hyper_parameters`, callbacks and optimizer state; `tok.checkpoint` reads those as inert
    placeholders, so the released file loads as it is.
    """
    return state_dict_at(read_checkpoint(path), "state_dict", path=path)


CONFIG_KEYS = ("ddconfig", "n_embed", "embed_dim", "use_ema")


def read_config(path: str | Path) -> dict[str, Any]:
    """The upstream yaml (as JSON, `model.init_args`) -> constructor config; use_ema defaults to False as upstream."""
    raw = read_json_file(path)
    init_args = raw.get("model", {}).get("init_args", raw) if isinstance(raw, dict) else {}
    try:
        return check_config({"use_ema": False, **{k: init_args[k] for k in CONFIG_KEYS if k in init_args}})
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"magvit2 config lacks {', '.join(missing)}")
    return dict(config)


def select_weights(sd: Mapping[str, torch.Tensor], model: nn.Module,
                   use_ema: bool = True) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map checkpoint keys onto `model.state_dict()` names and classify every other key.

    Raises `CheckpointError` for keys outside the known training-only groups. Missing weights are left for
    `load_state_dict(strict=True)` to report.
    """
    names = list(model.state_dict().keys())
    own = set(names)
    ema_of = {ema_name(n): n for n in names}
    if len(ema_of) != len(names):
        raise CheckpointError("dot-removed EMA names collide for this model; cannot map EMA shadows")
    if use_ema and not any(k.startswith(EMA_PREFIX) for k in sd):
        raise CheckpointError("checkpoint has no model_ema.* shadows; load it with use_ema=False")

    weights: dict[str, torch.Tensor] = {}
    groups: dict[str, tuple[str, list[str]]] = {}
    unknown: list[str] = []

    def drop(group: str, reason: str, key: str) -> None:
        groups.setdefault(group, (reason, []))[1].append(key)

    for key, value in sd.items():
        if use_ema and key in ema_of:
            weights[ema_of[key]] = value
        elif not use_ema and key in own:
            weights[key] = value
        elif use_ema and key in own:
            drop("raw encoder/decoder", "non-EMA copy of the weights (inference uses the EMA shadows)", key)
        elif not use_ema and key in ema_of:
            drop("model_ema encoder/decoder", "EMA shadows (use_ema=False loads the raw weights)", key)
        elif key in _EMA_SCALARS:
            drop("model_ema scalars", "LitEma decay / num_updates, training state", key)
        else:
            for group, reason, prefix in _TRAINING_ONLY_GROUPS:
                if key.startswith(prefix):
                    drop(group, reason, key)
                    break
            else:
                unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
        raise CheckpointError(f"{len(unknown)} checkpoint key(s) match neither the model nor a known "
                              f"training-only group: {shown}")
    return weights, LoadReport(source="ema" if use_ema else "raw", loaded=sorted(weights), dropped=groups)


def load_magvit2_state_dict(sd: Mapping[str, torch.Tensor], model: nn.Module, use_ema: bool = True,
                            assign: bool = False) -> LoadReport:
    """Load an already-read checkpoint state_dict (strict); `assign=True` for a model built on the meta device."""
    weights, report = select_weights(sd, model, use_ema)
    load_strict(model, weights, what=f"checkpoint ({'EMA' if use_ema else 'raw'} weights)", assign=assign)
    log.info("magvit2: %s", report.summary())
    return report


def load_magvit2_checkpoint(path: str | Path, model: nn.Module, use_ema: bool = True,
                            assign: bool = False) -> LoadReport:
    """Read `path` (weights_only) and load its EMA (default) or raw encoder/decoder weights into `model`."""
    return load_magvit2_state_dict(read_state_dict(path), model, use_ema=use_ema, assign=assign)
