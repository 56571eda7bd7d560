"""Full-size networks with random weights: speed without weight files (`load(name, random_weights=True)`,
`pytest bench --random-weights -m speed`).

Encode / decode time depends on the architecture and the input, not on the weight values, so a released network
built from its configuration with random initialisation times like the real one. The configuration is data in the
spec (`TokenizerSpec.random_config`: a static copy of the release's config where the release keeps it in a
downloaded file); each family builds from it with its `build_random(spec, device, dtype)`. No weight file is read
and nothing is downloaded. Tokenizers without a released-size configuration are skipped with that reason.

Initialisation is seeded (the same network every time; the caller's random state is untouched) and cheap: a network
without buffers is allocated uninitialised and every parameter is filled from one repeating block of uniform random
numbers, scaled to keep activations of a sane size through any depth (LeCun-uniform: values that shrink layer by layer
would end in denormal floats, which CPUs compute many times slower). A network whose buffers are computed in its
constructor (bit masks, position ids, pixel scaling) is constructed normally, directly on the device, first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from vision_tokenizers.weights import WeightsUnavailable

M = TypeVar("M", bound=nn.Module)

SEED = 0
# A prime period: no row of a weight matrix lines up with the repeating block.
PERIOD = 1_000_003
NO_CONFIG = "no released-size config for random weights"


class RandomWeightsUnsupported(WeightsUnavailable):
    """A tokenizer that cannot be built at its released size without its files (no `random_config`, or a family
    without `build_random`): the benchmark skips it with this one-line reason, like a missing weight file."""


def unsupported(name: str, why: str = NO_CONFIG) -> RandomWeightsUnsupported:
    return RandomWeightsUnsupported(f"{name}: {why} (--random-weights)", short=why)


def _pattern(device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return (torch.rand(PERIOD, generator=generator) * 2 - 1).to(device)


@torch.no_grad()
def fill_random_(module: nn.Module) -> nn.Module:
    """Fill every parameter of `module` in place: U(-1, 1) * sqrt(3 / fan_in) for matrices and convolution kernels
    (LeCun-uniform, variance 1 / fan_in), 1 + U(-1, 1) / 10 for vectors (norm scales, biases). Deterministic, no RNG
    per element."""
    patterns: dict[torch.device, torch.Tensor] = {}
    offset = 0
    for param in module.parameters():
        if param.is_meta:
            continue
        pattern = patterns.get(param.device)
        if pattern is None:
            pattern = patterns[param.device] = _pattern(param.device)
        scale, shift = (math.sqrt(3 / param[0].numel()), 0.0) if param.ndim >= 2 else (0.1, 1.0)
        flat = param.view(-1)
        done = 0
        while done < flat.numel():
            start = (offset + done) % PERIOD
            count = min(flat.numel() - done, PERIOD - start)
            flat[done:done + count].copy_(pattern[start:start + count]).mul_(scale).add_(shift)
            done += count
        offset += flat.numel()
    return module


def random_network(factory: Callable[..., M], *args: Any, device: torch.device | str = "cpu", **kwargs: Any) -> M:
    """`factory(*args, **kwargs)` on `device` with the parameters of `fill_random_`, in eval mode without gradients.

    Without buffers the network is allocated uninitialised (no per-element random draws); with buffers (computed at
    construction) it is constructed for real, seeded, then filled the same way.
    """
    device = torch.device(device)
    with torch.device("meta"):
        model = factory(*args, **kwargs)
    if device.type != "meta" and next(model.buffers(), None) is None:
        model = model.to_empty(device=device)
    elif device.type != "meta":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.device(device):
            torch.manual_seed(SEED)
            model = factory(*args, **kwargs)
    return fill_random_(model).eval().requires_grad_(False)


def parameter_count(tokenizer: Any) -> int:
    """Parameters of every network a tokenizer holds (each counted once, shared sub-networks included)."""
    seen: dict[int, int] = {}
    for value in vars(tokenizer).values():
        if isinstance(value, nn.Module):
            seen.update((id(p), p.numel()) for p in value.parameters())
    return sum(seen.values())


def supports_random_weights(name: str) -> bool:
    """Whether `name` can be built at its released size with random weights (see `RandomWeightsUnsupported`)."""
    from vision_tokenizers.registry import REGISTRY

    entry = REGISTRY.entry(name) if REGISTRY.static_spec(name) is not None else None
    return entry is not None and entry.build_random is not None and entry.spec.random_config is not None
