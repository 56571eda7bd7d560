"""Open-MAGVIT2 image tokenizer networks (TencentARC/Open-MAGVIT2 @ 3c58097), re-implemented for inference.

Module and attribute names mirror upstream (`improved_model.py`, `lookup_free_quantize.py`) so that the
released state_dict keys (`encoder.*`, `decoder.*`) load with `strict=True`. There is no attention anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GN_GROUPS = 32
GN_EPS = 1e-6  # upstream uses 1e-6 everywhere; torch's default 1e-5 shifts pre-quant by ~1e-3


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(GN_GROUPS, channels, eps=GN_EPS, affine=affine)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus a (1x1 projected when widths differ) residual."""

    def __init__(self, in_filters: int, out_filters: int) -> None:
        super().__init__()
        self.in_filters = in_filters
        self.out_filters = out_filters
        self.norm1 = group_norm(in_filters)
        self.norm2 = group_norm(out_filters)
        self.conv1 = nn.Conv2d(in_filters, out_filters, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_filters, out_filters, 3, padding=1, bias=False)
        if in_filters != out_filters:
            self.nin_shortcut = nn.Conv2d(in_filters, out_filters, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        residual = self.nin_shortcut(x) if self.in_filters != self.out_filters else x
        return h + residual


def _check_ddconfig(ch_mult: Sequence[int], double_z: bool) -> None:
    if double_z:
        raise ValueError("double_z=True is not an Open-MAGVIT2 tokenizer config (upstream ignores it; refusing)")
    if len(ch_mult) < 1:
        raise ValueError("ch_mult must have at least one level")


class Encoder(nn.Module):
    """conv_in -> per level: ResBlocks (+ stride-2 conv except last) -> mid ResBlocks -> GN/SiLU -> 1x1 conv_out."""

    def __init__(self, *, ch: int, out_ch: int, in_channels: int, num_res_blocks: int, z_channels: int,
                 ch_mult: Sequence[int] = (1, 2, 2, 4), resolution: int | None = None, double_z: bool = False) -> None:
        super().__init__()
        _check_ddconfig(ch_mult, double_z)
        self.num_blocks = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)

        in_ch_mult = (1, *ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_blocks):
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(block_in, block_out))
                block_in = block_out
            down = nn.Module()
            down.block = blocks
            if i_level < self.num_blocks - 1:
                down.downsample = nn.Conv2d(block_out, block_out, 3, stride=2, padding=1)
            self.down.append(down)

        self.mid_block = nn.ModuleList(ResBlock(block_in, block_in) for _ in range(num_res_blocks))
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i_level, down in enumerate(self.down):
            for block in down.block:
                x = block(x)
            if i_level < self.num_blocks - 1:
                x = down.downsample(x)
        for block in self.mid_block:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


def depth_to_space(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """DCR depth-to-space: channel index = (row_offset * bs + col_offset) * C_out + c.

    Not `F.pixel_shuffle` (CRD, channel = c * bs^2 + offset); the released weights assume DCR.
    """
    b, c, h, w = x.shape
    s = block_size * block_size
    if c % s:
        raise ValueError(f"depth_to_space: {c} channels are not divisible by {s}")
    x = x.view(b, block_size, block_size, c // s, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c // s, h * block_size, w * block_size)


class Upsampler(nn.Module):
    """Conv3x3 to 4x channels, then DCR depth-to-space (2x nearest-free upsampling)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim * 4, 3, padding=1)
        self.depth2space = depth_to_space  # an attribute (as upstream) so tests can plant a wrong shuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depth2space(self.conv1(x), block_size=2)


class AdaptiveGroupNorm(nn.Module):
    """GN without affine, modulated by statistics of the quantized latent `style` (per sample, per z channel).

    scale = gamma(sqrt(var_hw(style) + eps)), bias = beta(mean_hw(style)). The variance is torch's default
    UNBIASED estimate (upstream's comment says otherwise; its code calls `.var()` with no correction argument).
    """

    def __init__(self, z_channel: int, in_filters: int, eps: float = GN_EPS) -> None:
        super().__init__()
        self.gn = group_norm(in_filters, affine=False)
        self.gamma = nn.Linear(z_channel, in_filters)
        self.beta = nn.Linear(z_channel, in_filters)
        self.eps = eps

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        flat = style.flatten(2)
        scale = self.gamma((flat.var(dim=-1) + self.eps).sqrt())[:, :, None, None]
        bias = self.beta(flat.mean(dim=-1))[:, :, None, None]
        return self.gn(x) * scale + bias


class Decoder(nn.Module):
    """conv_in -> mid ResBlocks -> per level (last to first): AdaGN(style), ResBlocks, Upsampler -> GN/SiLU/conv_out.

    `up[i]` / `adaptive[i]` are indexed by level (upstream builds them with `insert(0, ...)`), so level 0 is the
    full-resolution one and is applied last.
    """

    def __init__(self, *, ch: int, out_ch: int, in_channels: int, num_res_blocks: int, z_channels: int,
                 ch_mult: Sequence[int] = (1, 2, 2, 4), resolution: int | None = None, double_z: bool = False) -> None:
        super().__init__()
        _check_ddconfig(ch_mult, double_z)
        self.num_blocks = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1, bias=True)
        self.mid_block = nn.ModuleList(ResBlock(block_in, block_in) for _ in range(num_res_blocks))

        ups: list[nn.Module] = []
        adaptive: list[nn.Module] = []
        for i_level in reversed(range(self.num_blocks)):
            block_out = ch * ch_mult[i_level]
            adaptive.append(AdaptiveGroupNorm(z_channels, block_in))
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(block_in, block_out))
                block_in = block_out
            up = nn.Module()
            up.block = blocks
            if i_level > 0:
                up.upsample = Upsampler(block_in)
            ups.append(up)
        self.up = nn.ModuleList(reversed(ups))
        self.adaptive = nn.ModuleList(reversed(adaptive))

        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        style = z
        h = self.conv_in(z)
        for block in self.mid_block:
            h = block(h)
        for i_level in reversed(range(self.num_blocks)):
            h = self.adaptive[i_level](h, style)
            for block in self.up[i_level].block:
                h = block(h)
            if i_level > 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LFQ(nn.Module):
    """Lookup-free quantization, inference path: sign per channel, id = sum_c bit_c * 2**c (channel 0 = LSB).

    No parameters and no state_dict entries. The bit weights are made on the fly (18 numbers) instead of being
    buffers, so the module works unchanged when built on the meta device; `codebook()` (2^18 x 18 for the release)
    is likewise only materialised on request. Training-time entropy/commitment losses are not ported.
    """

    def __init__(self, *, dim: int, codebook_size: int) -> None:
        super().__init__()
        if codebook_size <= 0 or codebook_size & (codebook_size - 1):
            raise ValueError(f"LFQ codebook_size must be a power of 2, got {codebook_size}")
        self.codebook_dim = codebook_size.bit_length() - 1
        if dim != self.codebook_dim:
            # Upstream would add projections here; no released tokenizer has them, so refuse instead.
            raise ValueError(f"LFQ dim {dim} != log2(codebook_size) {self.codebook_dim}: projections are not supported")
        self.dim = dim
        self.codebook_size = codebook_size

    def bit_weights(self, device: torch.device | str | None = None) -> torch.Tensor:
        return 2 ** torch.arange(self.codebook_dim, device=device, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) latent -> (quant in {-1,+1} in x's dtype, indices (B, h, w) int64).

        x == 0 maps to -1 / bit 0 (upstream: `where(x > 0, 1, -1)`).
        """
        if x.shape[1] != self.codebook_dim:
            raise ValueError(f"LFQ expects {self.codebook_dim} channels, got {tuple(x.shape)}")
        bits = x > 0
        quant = bits.to(x.dtype) * 2 - 1
        if torch.is_grad_enabled() and x.requires_grad:
            quant = x + (quant - x).detach()  # straight-through, only when someone differentiates
        weights = self.bit_weights(x.device).view(1, -1, 1, 1)
        indices = (bits.long() * weights).sum(dim=1)
        return quant, indices

    def indices_to_bits(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) int ids -> (..., C) bool, last dim = bit c (LSB first)."""
        return (indices.long().unsqueeze(-1) & self.bit_weights(indices.device)) != 0

    def indices_to_codes(self, indices: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, h, w) ids -> (B, C, h, w) latent in {-1, +1}."""
        if indices.ndim != 3:
            raise ValueError(f"indices_to_codes expects (B, h, w) ids, got {tuple(indices.shape)}")
        codes = self.indices_to_bits(indices).to(dtype) * 2 - 1
        return codes.permute(0, 3, 1, 2)

    def get_codebook_entry(self, x: torch.Tensor, bhwc: Sequence[int], order: Any = None) -> torch.Tensor:
        """Upstream's signature: (B, h*w) ids and (B, h, w, C) -> (B, C, h, w). `order` is AR-stage only."""
        b, h, w, c = bhwc
        if c != self.codebook_dim:
            raise ValueError(f"get_codebook_entry: C={c}, expected {self.codebook_dim}")
        return self.indices_to_codes(x.reshape(b, h, w))

    def codebook(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(codebook_size, C) float32, row i = bits of i as +-1 (upstream's non-persistent `codebook` buffer)."""
        return self.indices_to_bits(torch.arange(self.codebook_size, device=device)).float() * 2 - 1


class Magvit2Tokenizer(nn.Module):
    """encoder + LFQ + decoder; state_dict keys are exactly upstream VQModel's `encoder.*` and `decoder.*`."""

    def __init__(self, ddconfig: dict[str, Any], n_embed: int, embed_dim: int) -> None:
        super().__init__()
        if ddconfig["z_channels"] != embed_dim:
            raise ValueError(f"embed_dim {embed_dim} != z_channels {ddconfig['z_channels']}: not supported")
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = LFQ(dim=embed_dim, codebook_size=n_embed)
        self.downsample_factor = 2 ** (len(ddconfig["ch_mult"]) - 1)

    @classmethod
    def from_pretrained(cls, ckpt_path: str | Path, config: Mapping[str, Any]) -> Magvit2Tokenizer:
        """A released Lightning checkpoint + its config (`read_config` / the spec's copy): EMA weights, strict."""
        from tok.checkpoint import build_on_meta
        from tok.magvit2.checkpoint import check_config, load_magvit2_checkpoint

        config = check_config(config)
        model = build_on_meta(cls, config["ddconfig"], n_embed=config["n_embed"], embed_dim=config["embed_dim"])
        model.load_report = load_magvit2_checkpoint(ckpt_path, model, use_ema=bool(config["use_ema"]), assign=True)
        return model.eval().requires_grad_(False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pixels in [-1, 1] -> (quant, indices (B, h, w), pre_quant)."""
        pre_quant = self.encoder(x)
        quant, indices = self.quantize(pre_quant)
        return quant, indices, pre_quant

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, h, w) -> raw, unbounded image (nominally [-1, 1])."""
        return self.decoder(quant)

    def decode_code(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) ids -> image, through the codebook-entry path (upstream's own decode_code is broken)."""
        dtype = next(self.decoder.parameters()).dtype
        return self.decode(self.quantize.indices_to_codes(indices, dtype=dtype))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quant, indices, _ = self.encode(x)
        return self.decode(quant), indices


def parameter_counts(model: Magvit2Tokenizer) -> dict[str, int]:
    return {name: sum(p.numel() for p in getattr(model, name).parameters())
            for name in ("encoder", "decoder", "quantize")}
