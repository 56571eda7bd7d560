"""Loading a released TiTok checkpoint (config.json + model.safetensors / .bin) strictly into `TiTokModel`."""

from __future__ import annotations

from pathlib import Path

import torch

from tok.checkpoint import CheckpointError, build_on_meta, load_strict
from tok.checkpoint import read_state_dict as _read_state_dict
from tok.titok.config import TiTokConfig, read_json
from tok.titok.model import TiTokModel

CheckpointMismatch = CheckpointError  # the one weight-file error of tok/, under the name this package exported


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, or of a torch-pickle state dict (`.bin`/`.pt`) read without running code."""
    return _read_state_dict(path)


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming every missing, unexpected or wrongly shaped key."""
    from tok.checkpoint import state_dict_problems

    problems = state_dict_problems(model, state)
    if problems:
        raise CheckpointError("checkpoint does not match the TiTok config: " + "; ".join(problems))


def build_model(cfg: TiTokConfig, device: torch.device | str | None = None) -> TiTokModel:
    """Instantiate (random weights). Use device="meta" to inspect the full-size layout without memory."""
    with torch.device(device or "cpu"):
        return TiTokModel(cfg)


def load_titok(config_path: str | Path, weights_path: str | Path,
               overrides_path: str | Path | None = None) -> tuple[TiTokModel, TiTokConfig]:
    """config.json + weights (+ hardcoded_overrides.json) -> (model in eval mode on CPU fp32, config). Strict."""
    overrides = read_json(overrides_path) if overrides_path is not None else None
    try:
        cfg = TiTokConfig.from_dict(read_json(config_path), overrides)
    except (KeyError, TypeError, ValueError) as exc:  # a config.json without the fields the release has
        raise CheckpointError(f"{config_path}: not a TiTok config ({exc})") from exc
    model = build_on_meta(TiTokModel, cfg)  # no 2.5 GB random init for L-32; weights are assigned below
    load_strict(model, _read_state_dict(weights_path), what="checkpoint (TiTok config)", assign=True)
    return model.eval().requires_grad_(False), cfg
