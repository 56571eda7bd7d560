"""`VQConfig`: the LlamaGen VQ tokenizer's shape, with the VQ-16 release as defaults, or read off a state dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from tok.checkpoint import CheckpointError

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPS = 1e-6
# Upstream registers `codebook_used` as a (65536,) ring buffer of recent indices whatever the codebook size; it is
# persistent, so the released file carries it and a strict load needs it.
CODEBOOK_USED_LEN = 65536
VQ16_CH_MULT = (1, 1, 2, 2, 4)
VQ8_CH_MULT = (1, 2, 2, 4)


@dataclass(frozen=True)
class VQConfig:
    """LlamaGen `ModelArgs` plus the Encoder/Decoder constructor arguments it leaves at their defaults.

    Defaults are the released VQ-16 (`vq_ds16_t2i.pt`): ch 128, z_channels 256, 16384 x 8 l2-normalised codebook,
    16x down. Attention is not a knob upstream: one AttnBlock after every ResnetBlock of the deepest level (1/16 for
    VQ-16) plus one in each mid block. The tiny golden model is ``VQConfig(ch=32, z_channels=32, codebook_size=64)``.
    """

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True  # normalise codebook and z before the search and the lookup (not in the weights)
    codebook_show_usage: bool = True  # whether the model has the `quantize.codebook_used` buffer
    z_channels: int = 256
    ch: int = 128
    encoder_ch_mult: tuple[int, ...] = VQ16_CH_MULT
    decoder_ch_mult: tuple[int, ...] = VQ16_CH_MULT
    num_res_blocks: int = 2  # per encoder level; decoder levels have one more, as upstream
    in_channels: int = 3
    out_channels: int = 3
    dropout_p: float = 0.0  # training only; inference never drops

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_ch_mult", tuple(int(m) for m in self.encoder_ch_mult))
        object.__setattr__(self, "decoder_ch_mult", tuple(int(m) for m in self.decoder_ch_mult))
        if not self.encoder_ch_mult or not self.decoder_ch_mult:
            raise ValueError("encoder_ch_mult and decoder_ch_mult need at least one level")
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError(f"encoder and decoder must down/upsample equally: {self.encoder_ch_mult} vs "
                             f"{self.decoder_ch_mult}")
        widths = {self.ch * m for m in self.encoder_ch_mult + self.decoder_ch_mult}
        bad = sorted(w for w in widths if w <= 0 or w % GROUP_NORM_GROUPS)
        if bad:
            raise ValueError(f"channel widths {bad} are not positive multiples of {GROUP_NORM_GROUPS} (GroupNorm)")
        for name in ("codebook_size", "codebook_embed_dim", "z_channels", "num_res_blocks", "in_channels",
                     "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def downsample_factor(self) -> int:
        """Pixels per code along each side: 16 for VQ-16."""
        return 2 ** (len(self.encoder_ch_mult) - 1)

    @classmethod
    def vq16(cls, **overrides: Any) -> VQConfig:
        """LlamaGen's `VQ_16` factory (the release: 16384 x 8)."""
        return cls(**{"encoder_ch_mult": VQ16_CH_MULT, "decoder_ch_mult": VQ16_CH_MULT, **overrides})

    @classmethod
    def vq8(cls, **overrides: Any) -> VQConfig:
        """LlamaGen's `VQ_8` factory (8x down)."""
        return cls(**{"encoder_ch_mult": VQ8_CH_MULT, "decoder_ch_mult": VQ8_CH_MULT, **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VQConfig:
        """Known fields of `data`; anything else (training knobs such as commit_loss_beta) is ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], *, codebook_l2_norm: bool = True,
                        what: str = "checkpoint") -> VQConfig:
        """Everything the tensor shapes determine (codebook, widths, levels, block counts).

        `codebook_l2_norm` leaves no trace in the weights; it defaults to the release's True. A state dict that
        lacks the keys this reads, or has widths no config produces, raises CheckpointError naming them.
        """

        def shape(key: str) -> tuple[int, ...]:
            if key not in state:
                raise CheckpointError(f"{what}: no {key!r}, which a LlamaGen VQ state dict has (is this the VQ "
                                      "tokenizer's file?)")
            return tuple(state[key].shape)

        def count(prefix: str, suffix: str) -> int:
            n = 0
            while f"{prefix}{n}{suffix}" in state:
                n += 1
            return n

        codebook_size, embed_dim = shape("quantize.embedding.weight")
        z_channels = shape("quant_conv.weight")[1]
        ch, in_channels = shape("encoder.conv_in.weight")[:2]
        out_channels = shape("decoder.conv_out.weight")[0]
        levels = count("encoder.conv_blocks.", ".res.0.conv1.weight")
        num_res_blocks = count("encoder.conv_blocks.0.res.", ".conv1.weight")
        dec_levels = count("decoder.conv_blocks.", ".res.0.conv1.weight")
        if levels == 0 or num_res_blocks == 0 or dec_levels == 0:
            raise CheckpointError(f"{what}: no encoder/decoder conv_blocks.*.res.*.conv1.weight keys")

        def mult(key: str) -> int:
            width = shape(key)[0]
            if width % ch:
                raise CheckpointError(f"{what}: {key} has {width} output channels, not a multiple of ch={ch}")
            return width // ch

        enc = tuple(mult(f"encoder.conv_blocks.{i}.res.0.conv1.weight") for i in range(levels))
        # Decoder blocks run deepest level first, so block i is level (levels - 1 - i).
        dec = tuple(mult(f"decoder.conv_blocks.{i}.res.0.conv1.weight") for i in reversed(range(dec_levels)))
        try:
            return cls(codebook_size=codebook_size, codebook_embed_dim=embed_dim, codebook_l2_norm=codebook_l2_norm,
                       codebook_show_usage="quantize.codebook_used" in state, z_channels=z_channels, ch=ch,
                       encoder_ch_mult=enc, decoder_ch_mult=dec, num_res_blocks=num_res_blocks,
                       in_channels=in_channels, out_channels=out_channels)
        except ValueError as exc:
            raise CheckpointError(f"{what}: tensor shapes describe no valid LlamaGen VQ ({exc})") from exc

    def replace(self, **changes: Any) -> VQConfig:
        return replace(self, **changes)
