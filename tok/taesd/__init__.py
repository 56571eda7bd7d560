"""TAESD-family tiny autoencoders (madebyollin/taesd), rebuilt with the released parameter layout."""

from tok.taesd.model import TinyDecoder, TinyEncoder, scale_latents, unscale_latents

__all__ = ["TinyDecoder", "TinyEncoder", "scale_latents", "unscale_latents"]
