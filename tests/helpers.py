"""Shared paths for the suite's own tests. `../shared` sits beside the repository (read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: these tests need the project's shared/ folder beside the repository")
    return path


def save_random_inception(path: Path) -> Path:
    """Write a randomly initialised torch-fidelity InceptionV3 state dict to `path` (its released file name is where
    torch-fidelity looks): the FID plumbing runs for real without the unavailable pretrained weights."""
    import torch
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:  # build the module without its (unavailable) weights
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        inception = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in inception.modules():  # variance-preserving init so the 2048-d features are not ~0
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(inception.state_dict(), path)
    return path


def recorded_seed(text: str) -> int:
    """The seed a golden recorded in words (`torch.manual_seed(20); ...` in its meta.json), so the tests follow any
    golden set made the same way instead of a seed copied out of a README."""
    import re

    found = {int(s) for s in re.findall(r"manual_seed\((\d+)\)", text)}
    if len(found) != 1:
        raise ValueError(f"expected one manual_seed(N) in the golden's description, found {sorted(found)}: {text!r}")
    return found.pop()


def seeded_keys(keys, prefix: str) -> dict[str, int]:
    """Golden keys named `<prefix><seed>...` (e.g. `tatok.stochastic.indices_seed100`) -> the seed in their name."""
    seeds = {key: int(key[len(prefix):].split("_")[0]) for key in keys if key.startswith(prefix)}
    if not seeds:
        raise ValueError(f"the golden file has no key starting with {prefix!r}")
    return seeds
