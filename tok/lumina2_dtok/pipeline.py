"""Tar's Lumina2 diffusion de-tokenizer: TA-Tok features -> 1024 px image, batched.

features (B, 729, 1152) -> 27x27 grid -> bilinear to 128x128 (the latent size at 1024 px) = condition; fixed Gemma
prompt = caption; NextDiT velocity + Euler on the shifted grid from N(0, 1) noise; FLUX VAE decode. Upstream
(`LuminaAutoEncoder`) takes one image per call (it silently uses the first of a batch); here every row is its own
sample, and with per-row generators a row never depends on the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tok.checkpoint import CheckpointError
from tok.diffusers_io import load_diffusers_model
from tok.lumina2_dtok.nextdit import Lumina2Context, NextDiT
from tok.lumina2_dtok.sampler import euler_sample, time_grid
from tok.lumina2_dtok.text_encoder import encode_prompt, load_gemma

FLUX_HUB_ID = "black-forest-labs/FLUX.1-dev"
COND_GRID = 128  # upstream interpolates the features to 128x128 whatever the output resolution
VAE_DOWNSAMPLE = 8
DEFAULT_RESOLUTION = 1024
DEFAULT_STEPS = 50  # time points; the transformer runs steps - 1 times
DEFAULT_TIME_SHIFT = 6.0

Generators = torch.Generator | Sequence[torch.Generator] | None


def prepare_condition(features: torch.Tensor, grid: int = COND_GRID) -> torch.Tensor:
    """TA-Tok features (B, N, C), N a square grid row-major -> condition image (B, C, grid, grid) in fp32."""
    if features.dim() != 3:
        raise ValueError(f"features must be (B, N, C), got {tuple(features.shape)}")
    b, n, c = features.shape
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"features must hold a square token grid, got N = {n}")
    image = features.float().permute(0, 2, 1).reshape(b, c, side, side)
    return F.interpolate(image, size=(grid, grid), mode="bilinear", align_corners=False)


def draw_noise(shape: tuple[int, ...], generator: Generators = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """N(0, 1) in fp32. One generator draws the whole batch at once (batch 1 = upstream's ``torch.randn`` after
    ``manual_seed``); a list draws row i from generator i only; None uses the global RNG on `device`."""
    if generator is None:
        return torch.randn(shape, device=device)
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device).to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {shape[0]}")
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device).to(device) for g in gens])


def load_flux_vae(vae_dir: str | Path, torch_dtype: torch.dtype = torch.float32):
    """The FLUX.1-dev AutoencoderKL from its ``vae/`` folder (or the FLUX.1-dev folder holding it), loaded strictly."""
    from diffusers import AutoencoderKL

    folder = Path(vae_dir)
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    missing = [f for f in ("config.json", "diffusion_pytorch_model.safetensors") if not (folder / f).is_file()]
    help_text = (f"{FLUX_HUB_ID} is gated on the Hugging Face Hub: log in with `huggingface-cli login`, accept the "
                 f"licence at https://huggingface.co/{FLUX_HUB_ID}, then pre-download its VAE with "
                 f"`huggingface-cli download {FLUX_HUB_ID} --include 'vae/*'`")
    if missing:
        raise CheckpointError(f"{folder}: missing {', '.join(missing)}. {help_text}")
    vae = load_diffusers_model(AutoencoderKL, folder, torch_dtype=torch_dtype)
    if vae.config.shift_factor is None:
        raise CheckpointError(f"{folder}: config has no shift_factor; this is not the FLUX VAE")
    return vae


class Lumina2DTok(nn.Module):
    """NextDiT + FLUX VAE + the cached Gemma prompt embedding; `generate` maps TA-Tok features to images."""

    def __init__(self, transformer: NextDiT, vae: nn.Module, cap_feats: torch.Tensor, cap_mask: torch.Tensor):
        super().__init__()
        if vae.config.latent_channels != transformer.config.in_channels:
            raise CheckpointError(f"VAE latent channels {vae.config.latent_channels} != DiT in_channels "
                                  f"{transformer.config.in_channels}")
        self.transformer = transformer
        self.vae = vae
        # The prompt is constant: Gemma runs once at load time and only its output is kept.
        self.register_buffer("cap_feats", cap_feats.to(transformer.dtype), persistent=False)
        self.register_buffer("cap_mask", cap_mask, persistent=False)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, vae_dir: str | Path, gemma_dir: str | Path, *,
                        torch_dtype: torch.dtype = torch.float32) -> Lumina2DTok:
        """Load csuhan/Tar-Lumina2 (`model_dir`), the FLUX.1-dev VAE (`vae_dir`: its ``vae/`` folder) and
        google/gemma-2-2b (`gemma_dir`, used once for the prompt, then freed). Weight-file problems raise
        CheckpointError; everything ends on the CPU in `torch_dtype`, eval, without gradients."""
        if not torch_dtype.is_floating_point:
            raise ValueError(f"torch_dtype must be a floating dtype, got {torch_dtype}")
        tokenizer, text_encoder = load_gemma(gemma_dir, torch_dtype)
        cap_feats, cap_mask = encode_prompt(tokenizer, text_encoder)
        cap_feat_dim = text_encoder.config.hidden_size
        del tokenizer, text_encoder
        transformer = NextDiT.from_pretrained(model_dir, cap_feat_dim=cap_feat_dim, torch_dtype=torch_dtype)
        vae = load_flux_vae(vae_dir, torch_dtype)
        return cls(transformer, vae, cap_feats, cap_mask).eval()

    @property
    def device(self) -> torch.device:
        return self.cap_feats.device

    @property
    def cond_in_channels(self) -> int:
        """Width of the TA-Tok features `generate` takes (1152 for the release)."""
        return self.transformer.config.cond_in_channels

    @property
    def default_size(self) -> int:
        return DEFAULT_RESOLUTION

    # ---------------------------------------------------------------------------------------------------- pieces
    def prepare_context(self, features: torch.Tensor) -> Lumina2Context:
        """Caption and condition tokens for a batch of features (both independent of t)."""
        if features.dim() != 3 or features.shape[-1] != self.cond_in_channels:
            raise ValueError(f"features must be (B, N, {self.cond_in_channels}) TA-Tok decoder features, got "
                             f"{tuple(features.shape)}")
        cond = prepare_condition(features.to(self.device))
        return self.transformer.prepare_context(self.cap_feats, self.cap_mask, cond)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """DiT latents -> images (B, 3, H, W) in [0, 1], fp32 (FLUX scaling and shift, then (x + 1) / 2)."""
        cfg = self.vae.config
        z = latents / cfg.scaling_factor + cfg.shift_factor
        images = self.vae.decode(z.to(device=self.device, dtype=self.vae.dtype)).sample
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def sample_latents(self, features: torch.Tensor, *, steps: int = DEFAULT_STEPS,
                       time_shift: float | None = DEFAULT_TIME_SHIFT, guidance_scale: float = 1.0,
                       resolution: int = DEFAULT_RESOLUTION, generator: Generators = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        """Final latents (B, 16, resolution/8, resolution/8), fp32. See `generate` for the settings."""
        if guidance_scale != 1.0:
            raise ValueError("Tar-Lumina2 reconstructs without classifier-free guidance (guidance_scale 1.0); "
                             "upstream defines no unconditional input for it")
        if resolution % (VAE_DOWNSAMPLE * self.transformer.config.patch_size):
            raise ValueError(f"resolution must be a multiple of {VAE_DOWNSAMPLE * self.transformer.config.patch_size}"
                             f", got {resolution}")
        side = resolution // VAE_DOWNSAMPLE
        shape = (features.shape[0], self.transformer.config.in_channels, side, side)
        if noise is None:
            noise = draw_noise(shape, generator, self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {shape} for this batch and resolution, got {tuple(noise.shape)}")
        grid = time_grid(steps, time_shift)
        context = self.prepare_context(features)
        dtype = self.transformer.dtype

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.transformer(x.to(dtype), t, context)

        return euler_sample(velocity, noise.to(self.device), grid)

    @torch.no_grad()
    def generate(self, features: torch.Tensor, *, steps: int = DEFAULT_STEPS,
                 time_shift: float | None = DEFAULT_TIME_SHIFT, guidance_scale: float = 1.0,
                 resolution: int = DEFAULT_RESOLUTION, generator: Generators = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """TA-Tok features (B, N, 1152), any float dtype -> images (B, 3, resolution, resolution) in [0, 1], fp32.

        steps: time points of the Euler grid (upstream's ``num_sampling_steps``; steps - 1 transformer calls).
        time_shift: grid warp ``t / (t + s - s t)``; None or 0 for a uniform grid. guidance_scale: must be 1.0.
        generator: one ``torch.Generator`` for the whole batch, a list with one per row, or None (global RNG).
        noise: the initial latents (B, 16, resolution/8, resolution/8) instead of drawing them.
        """
        latents = self.sample_latents(features, steps=steps, time_shift=time_shift, guidance_scale=guidance_scale,
                                      resolution=resolution, generator=generator, noise=noise)
        return self.decode_latents(latents)
