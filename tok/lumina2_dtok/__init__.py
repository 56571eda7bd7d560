"""Tar's Lumina2 diffusion de-tokenizer (csuhan/Tar-Lumina2): NextDiT with a TA-Tok condition branch, Lumina's
shifted-time Euler sampler, the FLUX.1-dev VAE and a fixed Gemma-2-2b prompt."""

from tok.lumina2_dtok.nextdit import (
    NEXTDIT_ARCHS,
    Lumina2Context,
    NextDiT,
    NextDiTConfig,
    patchify,
    position_ids,
    read_model_args,
    unpatchify,
)
from tok.lumina2_dtok.pipeline import (
    COND_GRID,
    DEFAULT_RESOLUTION,
    DEFAULT_STEPS,
    DEFAULT_TIME_SHIFT,
    Lumina2DTok,
    draw_noise,
    load_flux_vae,
    prepare_condition,
)
from tok.lumina2_dtok.sampler import euler_sample, time_grid
from tok.lumina2_dtok.text_encoder import PROMPT, encode_prompt, load_gemma

__all__ = [
    "COND_GRID", "DEFAULT_RESOLUTION", "DEFAULT_STEPS", "DEFAULT_TIME_SHIFT", "NEXTDIT_ARCHS", "PROMPT",
    "Lumina2Context", "Lumina2DTok", "NextDiT", "NextDiTConfig", "draw_noise", "encode_prompt", "euler_sample",
    "load_flux_vae", "load_gemma", "patchify", "position_ids", "prepare_condition", "read_model_args",
    "time_grid", "unpatchify",
]
