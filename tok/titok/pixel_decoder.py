"""MaskGIT-VQGAN pixel decoder used by TiTok's second (pixel) stage.

Parameter names mirror the release (`pixel_decoder.conv_in`, `.mid.{i}`, `.up.{i}.block.{j}`, `.up.{i}.upsample_conv`,
`.norm_out`, `.conv_out`). Only the decoder exists in the checkpoint: there is no pixel encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPS = 1e-6  # VQGAN's value; 1e-5 visibly changes the image


@dataclass(frozen=True)
class PixelDecoderConfig:
    """Settings upstream hard-codes in TiTok.__init__; defaults are the released L-32 values."""

    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_resolutions: int = 5
    hidden_channels: int = 128
    num_res_blocks: int = 2
    z_channels: int = 256
    num_channels: int = 3
    resolution: int = 256  # only informative: the decoder is fully convolutional
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.channel_mult) != self.num_resolutions:
            raise ValueError(f"channel_mult {self.channel_mult} needs num_resolutions={self.num_resolutions} entries")
        if self.dropout != 0.0:
            raise ValueError("pixel decoder dropout must be 0 for inference")

    def channels(self, level: int) -> int:
        return self.hidden_channels * self.channel_mult[level]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS, affine=True)


def _conv3x3(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    # Upstream's Conv2dSame at stride 1 with an odd kernel is plain symmetric padding.
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias)


class ResnetBlock(nn.Module):
    """GN-SiLU-conv twice, no conv biases.

    Quirk kept from the release: when the channel count changes, the 1x1 `nin_shortcut` (out->out) is applied to the
    block's own output and the block input is dropped, i.e. `h + nin_shortcut(h)`, not `h + nin_shortcut(x)`.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, bias=False)
        self.has_shortcut = in_channels != out_channels
        if self.has_shortcut:
            self.nin_shortcut = nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        residual = self.nin_shortcut(h) if self.has_shortcut else x
        return h + residual


class UpBlock(nn.Module):
    """One resolution level: `num_res_blocks` ResnetBlocks, then (except level 0) nearest x2 and a 3x3 conv."""

    def __init__(self, cfg: PixelDecoderConfig, level: int):
        super().__init__()
        top = cfg.num_resolutions - 1
        cin = cfg.channels(top) if level == top else cfg.channels(level + 1)
        cout = cfg.channels(level)
        self.block = nn.ModuleList(
            ResnetBlock(cin if i == 0 else cout, cout) for i in range(cfg.num_res_blocks))
        self.upsample = level != 0
        if self.upsample:
            self.upsample_conv = _conv3x3(cout, cout, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        if self.upsample:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class PixelDecoder(nn.Module):
    """(B, z_channels, h, w) soft pixel embedding -> (B, 3, h * 2**(levels-1), ...) image, unclamped."""

    def __init__(self, cfg: PixelDecoderConfig):
        super().__init__()
        top = cfg.num_resolutions - 1
        mid_ch = cfg.channels(top)
        self.conv_in = _conv3x3(cfg.z_channels, mid_ch, bias=True)
        self.mid = nn.ModuleList(ResnetBlock(mid_ch, mid_ch) for _ in range(cfg.num_res_blocks))
        # Stored by level index (up.0 is the finest) but executed from the coarsest level down.
        self.up = nn.ModuleList(UpBlock(cfg, level) for level in range(cfg.num_resolutions))
        self.norm_out = _group_norm(cfg.channels(0))
        self.conv_out = _conv3x3(cfg.channels(0), cfg.num_channels, bias=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for blk in self.mid:
            x = blk(x)
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class PixelCodebook(nn.Module):
    """The pixel VQGAN codebook (`pixel_quantize.embedding`), used as a soft, probability-weighted mix.

    TiTok's decoder predicts logits over the pixel codes; upstream feeds `softmax(logits) @ codebook` to the pixel
    decoder, never the argmax code. Computed in fp32 so a bf16 model still mixes exact codebook rows.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1)
        return torch.einsum("bkhw,kd->bdhw", probs, self.embedding.weight.float())
