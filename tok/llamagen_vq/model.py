"""LlamaGen VQ tokenizer (FoundationVision/LlamaGen ce98ec4 `tokenizer/tokenizer_image/vq_model.py`), inference only.

Tar's AR-DTok decodes its codes with the VQ-16 release `vq_ds16_t2i.pt` (`{"model": state_dict}`), so parameter
names mirror upstream's `VQModel` and that file loads strictly.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from tok.checkpoint import build_on_meta, load_strict, read_checkpoint, state_dict_at
from tok.llamagen_vq.blocks import Decoder, Encoder
from tok.llamagen_vq.config import VQConfig
from tok.llamagen_vq.quantizer import VectorQuantizer


class VQModel(nn.Module):
    """Images in [-1, 1] <-> codes on a (H/f, W/f) grid, f = `config.downsample_factor` (16 for VQ-16)."""

    def __init__(self, config: VQConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VQConfig()
        self.encoder = Encoder(in_channels=config.in_channels, ch=config.ch, ch_mult=config.encoder_ch_mult,
                               num_res_blocks=config.num_res_blocks, z_channels=config.z_channels,
                               dropout=config.dropout_p)
        self.decoder = Decoder(z_channels=config.z_channels, ch=config.ch, ch_mult=config.decoder_ch_mult,
                               num_res_blocks=config.num_res_blocks, out_channels=config.out_channels,
                               dropout=config.dropout_p)
        self.quantize = VectorQuantizer(config.codebook_size, config.codebook_embed_dim, config.codebook_l2_norm,
                                        config.codebook_show_usage)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, config: VQConfig | None = None) -> VQModel:
        """Load a LlamaGen VQ file (`torch.save({"model": state_dict, ...})`), strictly, on CPU in fp32, eval mode.

        Without `config` the architecture is read off the tensor shapes (codebook, ch, z_channels, levels), so the
        same call loads the release and the tiny golden; `codebook_l2_norm` then takes the release's True. Other
        top-level entries (LlamaGen training also saves `args`, an argparse Namespace) are read as inert data and
        ignored. Any weight-file problem raises `tok.checkpoint.CheckpointError`.
        """
        state = state_dict_at(read_checkpoint(path), "model", path=path)
        if config is None:
            config = VQConfig.from_state_dict(state, what=str(path))
        model = build_on_meta(cls, config)
        load_strict(model, state, what=str(path), assign=True)
        return model.float().eval().requires_grad_(False)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def pre_quant(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, D, H/f, W/f) latent before the codebook search."""
        weight = self.encoder.conv_in.weight
        h = self.encoder(x.to(device=weight.device, dtype=weight.dtype))
        return self.quant_conv(h)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> (quant (B, D, H/f, W/f) fp32, indices (B, H/f * W/f) int64, row-major)."""
        return self.quantize(self.pre_quant(x))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) codebook entries -> (B, 3, f*h, f*w), nominally [-1, 1], unclamped, in the weights' dtype."""
        quant = quant.to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(quant))

    def codes_to_grid(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) with square N, or (B, h, w), -> (B, h, w); row-major like upstream's reshape."""
        if codes.ndim == 3:
            return codes
        if codes.ndim != 2:
            raise ValueError(f"codes must be (B, N) or (B, h, w), got shape {tuple(codes.shape)}")
        side = math.isqrt(codes.shape[1])
        if side * side != codes.shape[1]:
            raise ValueError(f"{codes.shape[1]} codes do not form a square grid; pass them as (B, h, w)")
        return codes.reshape(codes.shape[0], side, side)

    def decode_code(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, N) (square grid) or (B, h, w) -> image (B, 3, f*h, f*w), nominally [-1, 1], unclamped.

        Upstream `decode_code`: (l2-normalised) codebook lookup -> post_quant_conv -> decoder.
        """
        grid = self.codes_to_grid(codes).to(self.quantize.embedding.weight.device)
        return self.decode(self.quantize.lookup(grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction: decode(encode(x))."""
        return self.decode(self.encode(x)[0])
