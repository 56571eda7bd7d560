"""Sampling presets and the full-size release configs (the latter for meta-device checks and documentation).

Tar-SANA-600M-512px is stock Sana_600M_512px except `caption_channels = 1152` (TA-Tok width instead of Gemma-2's
2304); its VAE is `dc-ae-f32c32-sana-1.0`. At run time the folder's own config.json files are used, never these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SanaSampling:
    """Named sampler settings of `SanaDTok.generate`."""

    steps: int = 50
    guidance_scale: float = 1.0

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, SanaSampling] = {
    # The published comparison we reproduce (seed benchmark's `decode()` default).
    "benchmark": SanaSampling(steps=50, guidance_scale=1.0),
    # Tar's own reconstruction call (`dif_dtok_sana.py` __main__).
    "upstream": SanaSampling(steps=28, guidance_scale=1.0),
    # Tar's text-to-image demo: cfg 4 with the release's negative embeddings, diffusers' default 20 steps.
    "upstream_t2i": SanaSampling(steps=20, guidance_scale=4.0),
}

TAR_SANA_600M_512PX_TRANSFORMER: dict[str, Any] = dict(
    in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=28,
    num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152, caption_channels=1152,
    mlp_ratio=2.5, attention_bias=False, sample_size=16, patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6,
    interpolation_scale=None,
)

_DCAE_BLOCKS = ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3
DC_AE_F32C32_SANA_1_0: dict[str, Any] = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=_DCAE_BLOCKS, decoder_block_types=_DCAE_BLOCKS,
    encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3], decoder_layers_per_block=[3] * 6,
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]], decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    downsample_block_type="conv", upsample_block_type="interpolate", decoder_norm_types="rms_norm",
    decoder_act_fns="silu", scaling_factor=0.41407,
)
