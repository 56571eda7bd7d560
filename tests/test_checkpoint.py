"""tok.checkpoint: the one safe reader and strict loader every family uses."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from torch import nn

from tok.checkpoint import CheckpointError, Inert, load_strict, read_checkpoint, read_state_dict


class _Unknown:  # a class torch's safe unpickler refuses: stands for training state saved by some framework
    def __init__(self):
        self.beta = 0.9


class _RunsCommand:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_non_tensor_state_loads_as_inert_placeholders(tmp_path):
    path = tmp_path / "train.ckpt"
    weights = {"w": torch.arange(6.0).view(2, 3)}
    torch.save({"state_dict": weights, "args": argparse.Namespace(lr=0.1, name="x"), "extra": _Unknown()}, path)
    ck = read_checkpoint(path)
    assert torch.equal(ck["state_dict"]["w"], weights["w"])
    assert isinstance(ck["args"], Inert) and ck["args"].name == "argparse.Namespace"
    assert ck["args"].fields() == {"lr": 0.1, "name": "x"}
    assert ck["extra"].fields() == {"beta": 0.9} and not isinstance(ck["extra"], _Unknown)


def test_a_pickle_that_would_run_a_command_never_runs_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"sd": {"w": torch.zeros(1)}, "payload": _RunsCommand(str(marker))}, path)
    with pytest.raises(CheckpointError, match="could run a command"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files_are_checkpoint_errors(tmp_path, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"w{suffix}"
    state = {"w": torch.randn(64, 64)}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=str(path.name)):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "absent.pt")


def test_layout_and_strict_mismatch_name_the_keys(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"model": {"sd": {"weight": torch.zeros(3, 2), "bias": torch.zeros(4), "extra": torch.zeros(1)}}}, path)
    with pytest.raises(CheckpointError, match=r"\['model'\]\['args'\]"):
        read_state_dict(path, "model", "args")
    state = read_state_dict(path, "model", "sd")
    with pytest.raises(CheckpointError) as info:
        load_strict(nn.Linear(2, 3), state)
    message = str(info.value)
    assert "unexpected (1): extra" in message and "bias (4,) != (3,)" in message
    good = {"weight": torch.ones(3, 2), "bias": torch.ones(3)}
    assert torch.equal(load_strict(nn.Linear(2, 3), good).weight, good["weight"])
