"""TAESD / TAEF2 networks.

The released files are state_dicts of flat ``nn.Sequential`` stacks, so both networks are Sequentials whose
layer order reproduces those indices exactly (conv = 3x3 with padding 1; ``Block`` = three convs with ReLUs,
a skip and a ReLU fuse). TAEF2 (FLUX.2) adds, in the three blocks nearest the latent, a normalised 1x1 branch
(``pool``) that is added to the block input before the block runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tok.checkpoint import load_strict, read_state_dict

WIDTH = 64
LATENT_MAGNITUDE = 3.0
LATENT_SHIFT = 0.5


def conv3x3(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """Keeps decoder inputs in (-3, 3) smoothly: tanh(x / 3) * 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / LATENT_MAGNITUDE) * LATENT_MAGNITUDE


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, norm_branch: bool = False):
        super().__init__()
        self.conv = nn.Sequential(conv3x3(n_in, n_out), nn.ReLU(), conv3x3(n_out, n_out), nn.ReLU(),
                                  conv3x3(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        hidden = 4 * n_in
        # Named `pool` in the released weights; GroupNorm over the whole map gives the block global statistics.
        self.pool = nn.Sequential(
            nn.Conv2d(n_in, hidden, 1, bias=False), nn.GroupNorm(4, hidden), nn.ReLU(),
            nn.Conv2d(hidden, n_in, 1, bias=False),
        ) if norm_branch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class _FromPretrained:
    @classmethod
    def from_pretrained(cls, path: str | Path, latent_channels: int, norm_branch: bool = False):
        """A released `taef*_{encoder,decoder}.pth` state dict, loaded strictly."""
        model = cls(latent_channels, norm_branch)
        load_strict(model, read_state_dict(path), what=str(path))
        return model.eval().requires_grad_(False)


def _stage(n_blocks: int, norm_branch: bool) -> list[nn.Module]:
    return [Block(WIDTH, WIDTH, norm_branch) for _ in range(n_blocks)]


class TinyEncoder(_FromPretrained, nn.Sequential):
    """[0,1] RGB -> raw latents at 1/8 resolution."""

    def __init__(self, latent_channels: int = 4, norm_branch: bool = False):
        layers: list[nn.Module] = [conv3x3(3, WIDTH), *_stage(1, False)]
        for level in range(3):
            innermost = level == 2
            layers += [conv3x3(WIDTH, WIDTH, stride=2, bias=False), *_stage(3, norm_branch and innermost)]
        layers.append(conv3x3(WIDTH, latent_channels))
        super().__init__(*layers)


class TinyDecoder(_FromPretrained, nn.Sequential):
    """Raw latents -> RGB (unclamped, ~[0,1]) at 8x resolution."""

    def __init__(self, latent_channels: int = 4, norm_branch: bool = False):
        layers: list[nn.Module] = [SoftClamp(), conv3x3(latent_channels, WIDTH), nn.ReLU()]
        for level in range(3):
            innermost = level == 0
            layers += [*_stage(3, norm_branch and innermost), nn.Upsample(scale_factor=2),
                       conv3x3(WIDTH, WIDTH, bias=False)]
        layers += [*_stage(1, False), conv3x3(WIDTH, 3)]
        super().__init__(*layers)


def scale_latents(latents: torch.Tensor) -> torch.Tensor:
    """Raw latents -> [0,1] (the TAESD / diffusers AutoencoderTiny convention: /6 + 0.5, clamped)."""
    return latents.div(2 * LATENT_MAGNITUDE).add(LATENT_SHIFT).clamp(0, 1)


def unscale_latents(scaled: torch.Tensor) -> torch.Tensor:
    return scaled.sub(LATENT_SHIFT).mul(2 * LATENT_MAGNITUDE)
