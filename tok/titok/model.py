"""TiTok networks: ViT encoder and decoder over 1D latent tokens, the l2-normalised VQ, and the full model.

Written from the behaviour pinned by the golden tensors (shared/golden/titok/README.md). Parameter names mirror the
release so that `load_state_dict(strict=True)` works on its `model.safetensors`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tok.titok.config import TiTokConfig, ViTSize
from tok.titok.pixel_decoder import PixelCodebook, PixelDecoder

try:  # optional; SDPA already picks flash kernels on CUDA, this only adds the packaged ones
    from flash_attn import flash_attn_func as _flash_attn_func
except ImportError:
    _flash_attn_func = None

MLP_RATIO = 4
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm default, as upstream; 1e-6 flips token ids


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter layout, run batch-first through SDPA.

    `in_proj_weight` stacks q, k, v (3W, W); `out_proj` is a plain Linear. No mask, no dropout, scale 1/sqrt(W/heads).
    """

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.num_heads, w // self.num_heads)
        q, k, v = qkv.unbind(2)  # each (B, L, H, D)
        if _flash_attn_func is not None and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            out = _flash_attn_func(q, k, v)
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # SDPA wants (B, H, L, D)
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.out_proj(out.reshape(b, n, w))


class Mlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * MLP_RATIO)
        self.c_proj = nn.Linear(width * MLP_RATIO, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # exact (erf) GELU, as nn.GELU()


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = Attention(width, num_heads)
        self.ln_2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _grid(image_size: int, patch_size: int) -> int:
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
    return image_size // patch_size


def _embedding(*shape: int, scale: float) -> nn.Parameter:
    return nn.Parameter(scale * torch.randn(*shape))


class _ViTTrunk(nn.Module):
    """What encoder and decoder share: cls/positional embeddings, ln_pre, the blocks and ln_post."""

    def __init__(self, size: ViTSize, grid_size: int, num_latent_tokens: int):
        super().__init__()
        self.width, self.grid_size, self.num_latent_tokens = size.width, grid_size, num_latent_tokens
        scale = size.width ** -0.5
        self.class_embedding = _embedding(1, size.width, scale=scale)
        self.positional_embedding = _embedding(grid_size ** 2 + 1, size.width, scale=scale)
        self.latent_token_positional_embedding = _embedding(num_latent_tokens, size.width, scale=scale)
        self.ln_pre = nn.LayerNorm(size.width, eps=LAYER_NORM_EPS)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(size.width, size.num_heads)
                                         for _ in range(size.num_layers))
        self.ln_post = nn.LayerNorm(size.width, eps=LAYER_NORM_EPS)

    def _with_cls(self, grid_tokens: torch.Tensor) -> torch.Tensor:
        cls = self.class_embedding.to(grid_tokens.dtype).expand(grid_tokens.shape[0], 1, -1)
        return torch.cat([cls, grid_tokens], dim=1) + self.positional_embedding.to(grid_tokens.dtype)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(x)
        for blk in self.transformer:
            x = blk(x)
        return x


class TiTokEncoder(_ViTTrunk):
    """Image (B,3,H,W) in [0,1] + latent tokens (N,W) -> z (B, token_size, 1, N)."""

    def __init__(self, size: ViTSize, image_size: int, patch_size: int, num_latent_tokens: int, token_size: int):
        super().__init__(size, _grid(image_size, patch_size), num_latent_tokens)
        self.patch_embed = nn.Conv2d(3, size.width, kernel_size=patch_size, stride=patch_size, bias=True)
        self.conv_out = nn.Conv2d(size.width, token_size, kernel_size=1, bias=True)

    def forward(self, pixels: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        b = pixels.shape[0]
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # (B, g*g, W), row-major patches
        x = self._with_cls(x)
        latents = (latent_tokens + self.latent_token_positional_embedding).to(x.dtype).expand(b, -1, -1)
        x = self._blocks(torch.cat([x, latents], dim=1))  # sequence [cls, patches, latents]
        latents = self.ln_post(x[:, 1 + self.grid_size ** 2:]).contiguous()  # (B, N, W)
        # Legacy layout of the release (is_legacy=True): reinterpret (B,N,W) memory as (B,W,N,1). NOT a transpose.
        z = self.conv_out(latents.reshape(b, self.width, self.num_latent_tokens, 1))
        return z.reshape(b, -1, 1, self.num_latent_tokens)


class TiTokDecoder(_ViTTrunk):
    """Quantised latents (B, token_size, 1, N) -> pixel-code logits (B, pixel_codebook_size, g, g)."""

    def __init__(self, size: ViTSize, image_size: int, patch_size: int, num_latent_tokens: int, token_size: int,
                 pixel_codebook_size: int):
        super().__init__(size, _grid(image_size, patch_size), num_latent_tokens)
        self.decoder_embed = nn.Linear(token_size, size.width)
        self.mask_token = _embedding(1, 1, size.width, scale=size.width ** -0.5)
        # Legacy head: 1x1 conv, tanh, 1x1 conv to the pixel codebook's logits (indices 0 and 2 as in the release).
        self.ffn = nn.Sequential(nn.Conv2d(size.width, 2 * size.width, 1), nn.Tanh(),
                                 nn.Conv2d(2 * size.width, pixel_codebook_size, 1))
        self.conv_out = nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        n = h * w
        latents = self.decoder_embed(z.reshape(b, c, n).transpose(1, 2))  # (B, N, W)
        latents = latents + self.latent_token_positional_embedding[:n].to(latents.dtype)
        masks = self.mask_token.to(latents.dtype).expand(b, self.grid_size ** 2, -1)
        x = torch.cat([self._with_cls(masks), latents], dim=1)  # sequence [cls, mask tokens, latents]
        x = self.ln_post(self._blocks(x)[:, 1:1 + self.grid_size ** 2])  # (B, g*g, W)
        x = x.transpose(1, 2).reshape(b, self.width, self.grid_size, self.grid_size)
        return self.conv_out(self.ffn(x))


class VectorQuantizer(nn.Module):
    """Nearest-code VQ, always in fp32. With `use_l2_norm` both z and the codes are l2-normalised (cosine search) and
    the quantised vector is the normalised code."""

    def __init__(self, codebook_size: int, token_size: int, use_l2_norm: bool = True):
        super().__init__()
        self.use_l2_norm = use_l2_norm
        self.embedding = nn.Embedding(codebook_size, token_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.use_l2_norm else x

    def codebook(self) -> torch.Tensor:
        return self.normalize(self.embedding.weight.float())

    def distances(self, z_flat: torch.Tensor) -> torch.Tensor:
        """(M, C) -> squared distances (M, K) after normalisation, |z|^2 + |e|^2 - 2 z.e as upstream."""
        z_flat, codes = self.normalize(z_flat.float()), self.codebook()
        return z_flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * z_flat @ codes.t()

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> codes (..., C), fp32 and normalised like the search."""
        return self.normalize(F.embedding(ids, self.embedding.weight.float()))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B,C,H,W) -> (z_q (B,C,H,W) fp32 with straight-through form, ids (B,H,W) int64)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            b, c, h, w = z.shape
            z = z.float().permute(0, 2, 3, 1).reshape(-1, c)
            ids = self.distances(z).argmin(dim=1)
            z_n = self.normalize(z)
            z_q = z_n + (self.lookup(ids) - z_n).detach()  # same rounding as upstream's encode()
            return z_q.view(b, h, w, c).permute(0, 3, 1, 2).contiguous(), ids.view(b, h, w)


class TiTokModel(nn.Module):
    """TiTok 1D tokenizer with the MaskGIT-VQGAN pixel stage (the release's `finetune_decoder=True` layout)."""

    def __init__(self, cfg: TiTokConfig):
        super().__init__()
        enc, dec = cfg.enc, cfg.dec
        self.num_latent_tokens = cfg.num_latent_tokens
        self.latent_tokens = _embedding(cfg.num_latent_tokens, enc.width, scale=enc.width ** -0.5)
        self.encoder = TiTokEncoder(enc, cfg.image_size, cfg.enc_patch_size, cfg.num_latent_tokens, cfg.token_size)
        self.decoder = TiTokDecoder(dec, cfg.image_size, cfg.dec_patch_size, cfg.num_latent_tokens, cfg.token_size,
                                    cfg.pixel_codebook_size)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.token_size, cfg.use_l2_norm)
        self.pixel_quantize = PixelCodebook(cfg.pixel_codebook_size, cfg.pixel.z_channels)
        self.pixel_decoder = PixelDecoder(cfg.pixel)

    @classmethod
    def from_pretrained(cls, config_path: str | Path, weights_path: str | Path,
                        overrides_path: str | Path | None = None) -> TiTokModel:
        """The release's config.json + model.safetensors (+ hardcoded_overrides.json), loaded strictly."""
        from tok.titok.checkpoint import load_titok

        model, cfg = load_titok(config_path, weights_path, overrides_path)
        model.config = cfg
        return model

    def cast(self, device: torch.device | str, dtype: torch.dtype) -> TiTokModel:
        """Move to device/dtype but keep both codebooks in fp32 (the VQ search and the pixel mix run in fp32).

        The codebooks are never routed through `dtype`: a bf16 round trip would change which code is nearest.
        """
        codebooks = (self.quantize, self.pixel_quantize)
        for child in self.children():
            if any(child is c for c in codebooks):
                child.to(device=device).float()
            else:
                child.to(device=device, dtype=dtype)
        for name, p in list(self.named_parameters(recurse=False)):
            setattr(self, name, nn.Parameter(p.detach().to(device=device, dtype=dtype), requires_grad=p.requires_grad))
        return self

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) in [0,1] (no normalisation) -> (z_q (B,C,1,N) fp32, ids (B,1,N) int64)."""
        return self.quantize(self.encoder(pixels, self.latent_tokens))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B,C,1,N) quantised latents -> image (B,3,H,W), unclamped."""
        logits = self.decoder(z_q.to(self.decoder.decoder_embed.weight.dtype))
        return self.pixel_decoder(self.pixel_quantize(logits).to(self.pixel_decoder.conv_in.weight.dtype))

    def decode_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B,N) or (B,1,N) -> image (B,3,H,W), unclamped."""
        if ids.ndim == 3 and ids.shape[1] == 1:
            ids = ids.squeeze(1)
        if ids.ndim != 2:
            raise ValueError(f"expected token ids of shape (B, N) or (B, 1, N), got {tuple(ids.shape)}")
        codes = self.quantize.lookup(ids.long())  # (B, N, C), l2-normalised
        return self.decode(codes.transpose(1, 2).unsqueeze(2))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(pixels)[0])
