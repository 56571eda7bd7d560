"""`SanaDTok`: Tar's SANA diffusion de-tokenizer, TA-Tok features -> images, on stock diffusers parts.

Everything inside a call is plain `diffusers.SanaPipeline` (SanaTransformer2DModel, AutoencoderDC decode of
`latents / scaling_factor`, the folder's scheduler, `(x / 2 + 0.5).clamp(0, 1)`); the Tar-specific part is the
conditioning (`conditioning.py`) and the precision upstream runs in (transformer bf16, VAE fp32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderDC, SanaPipeline, SanaTransformer2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from tok.sana_dtok.conditioning import UPSTREAM_EMBED_DTYPE, SanaConditioning, sana_conditioning
from tok.sana_dtok.configs import PRESETS
from tok.sana_dtok.loading import check_model_index, load_component, load_scheduler, read_negative_embeds

Generators = torch.Generator | list[torch.Generator] | None


class SanaDTok:
    """A loaded Tar-SANA release: `generate(features)` paints images from TA-Tok decoder features."""

    def __init__(self, transformer: SanaTransformer2DModel, vae: AutoencoderDC, scheduler: SchedulerMixin,
                 negative_prompt_embeds: torch.Tensor, *, embed_dtype: torch.dtype = UPSTREAM_EMBED_DTYPE):
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.negative_prompt_embeds = negative_prompt_embeds
        self.embed_dtype = embed_dtype

    @classmethod
    def from_pretrained(cls, path: str | Path, *, torch_dtype: torch.dtype = torch.float32,
                        vae_dtype: torch.dtype = torch.float32, flow_shift: float | None = None) -> SanaDTok:
        """Load a Tar-SANA folder (csuhan/Tar-SANA-600M-512px layout) on the CPU.

        `torch_dtype` is the transformer's dtype (upstream: bfloat16); the VAE stays `vae_dtype` (upstream: fp32).
        `flow_shift` overrides the scheduler config's shift (None = the folder's). Weight/layout problems raise
        `tok.checkpoint.CheckpointError`.
        """
        folder = Path(path)
        check_model_index(folder)
        transformer = load_component(SanaTransformer2DModel, folder, "transformer", torch_dtype)
        vae = load_component(AutoencoderDC, folder, "vae", vae_dtype)
        scheduler = load_scheduler(folder, flow_shift)
        negative = read_negative_embeds(folder, transformer.config.caption_channels)
        return cls(transformer, vae, scheduler, negative)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SanaDTok:
        """Move both networks; `dtype` applies to the transformer only (the VAE keeps its precision, as upstream)."""
        nn.Module.to(self.transformer, device=device, dtype=dtype)  # see loading.load_component on nn.Module.to
        nn.Module.to(self.vae, device=device)
        self.negative_prompt_embeds = self.negative_prompt_embeds.to(device=device)
        return self

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def caption_channels(self) -> int:
        return int(self.transformer.config.caption_channels)

    @property
    def default_size(self) -> int:
        """Output side length the transformer was trained for (sample_size 16 x DC-AE f32 = 512)."""
        return int(self.transformer.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.encoder_block_out_channels) - 1)

    def pipeline(self) -> SanaPipeline:
        """A `SanaPipeline` over the loaded parts (no text encoder/tokenizer: embeddings are passed directly)."""
        pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=self.vae, transformer=self.transformer,
                            scheduler=self.scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def conditioning(self, features: torch.Tensor, guidance_scale: float = 1.0) -> SanaConditioning:
        """The pipeline inputs Tar builds from TA-Tok features (see `sana_conditioning`)."""
        return sana_conditioning(features.to(self.device), self.negative_prompt_embeds, guidance_scale=guidance_scale,
                                 embed_dtype=self.embed_dtype, caption_channels=self.caption_channels)

    @torch.inference_mode()
    def generate(self, features: torch.Tensor, *, steps: int = PRESETS["benchmark"].steps,
                 guidance_scale: float = PRESETS["benchmark"].guidance_scale, generator: Generators = None,
                 latents: torch.Tensor | None = None, height: int | None = None, width: int | None = None,
                 output_type: Literal["pt", "latent"] = "pt") -> torch.Tensor:
        """TA-Tok decoder features (B, N, caption_channels) -> images (B, 3, H, W) float32 in [0, 1].

        Initial noise: `latents` (B, C, H/32, W/32) if given; else drawn like diffusers' `randn_tensor`: one
        `torch.randn((B, ...), generator=generator)` for a single generator (upstream's order), or row i from
        `generator[i]` alone for a list, so a row never depends on the batch. Pass CPU generators for results that
        do not depend on the device. `output_type="latent"` returns the final latents (before VAE scaling).
        """
        if output_type not in ("pt", "latent"):
            raise ValueError(f"output_type must be 'pt' or 'latent', got {output_type!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        batch = features.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch}")
        size = self.default_size
        height, width = height or size, width or size
        if latents is not None:
            expected = (batch, self.transformer.config.in_channels, height // self.vae_scale_factor,
                        width // self.vae_scale_factor)
            if tuple(latents.shape) != expected:
                raise ValueError(f"latents must have shape {expected}, got {tuple(latents.shape)}")
        cond = self.conditioning(features, guidance_scale)
        out = self.pipeline()(**cond.pipeline_kwargs(), height=height, width=width, num_inference_steps=steps,
                              guidance_scale=guidance_scale, generator=generator, latents=latents,
                              output_type=output_type, return_dict=False)[0]
        return out.float()
