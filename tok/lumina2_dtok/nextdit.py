"""NextDiT of Lumina-Image-2.0 with Tar's condition branch (the `csuhan/Tar-Lumina2` transformer).

One sequence per image: ``[caption | condition | image]`` tokens. Captions (Gemma-2 hidden states) and the condition
(TA-Tok features resized to a grid) each get an embedder and a 2-layer refiner without modulation; image latents get
an embedder and a 2-layer refiner modulated by the timestep. The main blocks modulate condition tokens with the
embedding of t = 1 (the condition is always "clean"), all other tokens with the current t. Caption and condition do
not depend on t, so `prepare_context` runs their branches once per sampling run and `forward` only the rest.

Parameter names follow the released ``consolidated_ema.00-of-01.pth`` so the file loads strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tok.checkpoint import CheckpointError, build_on_meta, load_strict, read_checkpoint, read_state_dict
from tok.layers import RMSNorm

MODEL_ARGS_FILE = "model_args.pth"
LUMINA2_HUB_ID = "csuhan/Tar-Lumina2"


@dataclass(frozen=True)
class NextDiTConfig:
    patch_size: int = 2
    dim: int = 2304
    n_layers: int = 26
    n_refiner_layers: int = 2
    n_heads: int = 24
    n_kv_heads: int | None = 8
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    qk_norm: bool = True
    in_channels: int = 16  # FLUX VAE latent channels (a loader argument upstream)
    cond_in_channels: int = 1152  # TA-Tok / SigLIP2-so400m feature width (a loader argument upstream)
    cap_feat_dim: int = 2304  # Gemma-2-2b hidden size (taken from the text encoder upstream)
    axes_dims: tuple[int, ...] = (32, 32, 32)
    axes_lens: tuple[int, ...] = (300, 512, 512)
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.dim // self.n_heads != sum(self.axes_dims):
            raise ValueError(f"head dim {self.dim}/{self.n_heads} must equal sum(axes_dims) = {sum(self.axes_dims)}")
        if any(d % 2 for d in self.axes_dims):
            raise ValueError(f"RoPE axes_dims must be even, got {self.axes_dims}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def t_dim(self) -> int:
        return min(self.dim, 1024)


# `model_args.model` -> architecture. The tiny entry is not upstream: it names the random-weight test model of the
# project's golden data (shared/golden/tar_diffusion_dtok/lumina2, whose model_args also carries this config).
NEXTDIT_ARCHS: dict[str, dict[str, Any]] = {
    "NextDiT_2B_GQA_patch2_Adaln_Refiner": dict(patch_size=2, dim=2304, n_layers=26, n_heads=24, n_kv_heads=8,
                                                axes_dims=(32, 32, 32), axes_lens=(300, 512, 512)),
    "NextDiT_tiny_GQA_patch2_Adaln_Refiner": dict(patch_size=2, dim=32, n_layers=2, n_heads=2, n_kv_heads=1,
                                                  axes_dims=(4, 6, 6), axes_lens=(300, 512, 512)),
}


# ------------------------------------------------------------------------------------------------------ building blocks
def modulate(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Scale-only adaLN; `scale` is (B, D) or already per token (B, L, D)."""
    return x * (1 + (scale.unsqueeze(1) if scale.dim() == 2 else scale))


class TimestepEmbedder(nn.Module):
    """256-dim ``[cos, sin]`` sinusoid of t (max period 10000, t used unscaled in [0, 1]) -> MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return F.pad(emb, (0, dim % 2))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.sinusoid(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


# ------------------------------------------------------------------------------------------------------------- RoPE
@dataclass
class Rope:
    """cos / sin of the rotation angles, (B or 1, L, head_dim / 2); consecutive channel pairs are rotated."""

    cos: torch.Tensor
    sin: torch.Tensor

    @staticmethod
    def cat(parts: list[Rope]) -> Rope:
        batch = max(p.cos.shape[0] for p in parts)
        return Rope(torch.cat([p.cos.expand(batch, -1, -1) for p in parts], dim=1),
                    torch.cat([p.sin.expand(batch, -1, -1) for p in parts], dim=1))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, H, head_dim); rotated in fp32 as upstream, returned in x's dtype."""
        pairs = x.float().unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        cos, sin = self.cos.unsqueeze(2), self.sin.unsqueeze(2)
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).type_as(x)


def rope_for(ids: torch.Tensor, axes_dims: tuple[int, ...], axes_lens: tuple[int, ...], theta: float) -> Rope:
    """Rotation for integer position ids (..., L, n_axes): per axis d/2 frequencies, axes concatenated."""
    for axis, limit in enumerate(axes_lens):
        top = int(ids[..., axis].max()) if ids.numel() else 0
        if top >= limit:
            raise ValueError(f"position {top} on RoPE axis {axis} exceeds the model's axes_lens {tuple(axes_lens)} "
                             "(upstream precomputes only that many positions)")
    angles = []
    for axis, d in enumerate(axes_dims):
        inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d)
        angles.append((ids[..., axis].double().unsqueeze(-1) * inv).float())
    angle = torch.cat(angles, dim=-1)
    return Rope(torch.cos(angle), torch.sin(angle))


def position_ids(cap_len: int, cond_hw: tuple[int, int], img_hw: tuple[int, int],
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3-axis positions of the ``[caption | condition | image]`` tokens (grids in tokens, row-major).

    Caption k -> (k, 0, 0); condition -> (cap_len, row, col) ("aligned": same row/col as the image grid);
    image -> (cap_len + 1, row, col).
    """
    cap = torch.zeros(cap_len, 3, dtype=torch.int64, device=device)
    cap[:, 0] = torch.arange(cap_len, device=device)
    return cap, _grid_ids(cap_len, *cond_hw, device=device), _grid_ids(cap_len + 1, *img_hw, device=device)


def _grid_ids(frame: int, h: int, w: int, device: torch.device | str | None) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([torch.full_like(rows, frame), rows, cols], dim=-1).flatten(0, 1)


# ------------------------------------------------------------------------------------------------------ transformer
class JointAttention(nn.Module):
    """GQA self-attention: fused qkv, per-head RMSNorm on q and k before RoPE, key-padding mask only."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, qk_norm: bool):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.qkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=False)
        self.out = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        # eps 1e-6: upstream's vanilla RMSNorm default (apex's FusedRMSNorm would use 1e-5).
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope: Rope) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim,
                                     self.n_kv_heads * self.head_dim], dim=-1)
        q = rope.apply(self.q_norm(q.view(b, n, self.n_heads, self.head_dim)))
        k = rope.apply(self.k_norm(k.view(b, n, self.n_kv_heads, self.head_dim)))
        v = v.view(b, n, self.n_kv_heads, self.head_dim)
        rep = self.n_heads // self.n_kv_heads  # query head h reads kv head h // rep
        k, v = (t.repeat_interleave(rep, dim=2) for t in (k, v))
        attn_mask = None if mask is None else mask.view(b, 1, 1, n)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=attn_mask, scale=self.head_dim ** -0.5)
        return self.out(out.transpose(1, 2).flatten(2).to(x.dtype))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), hidden rounded up to a multiple of `multiple_of`."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int, ffn_dim_multiplier: float | None):
        super().__init__()
        if ffn_dim_multiplier is not None:
            hidden_dim = int(ffn_dim_multiplier * hidden_dim)
        hidden_dim = multiple_of * math.ceil(hidden_dim / multiple_of)
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _per_token(main: torch.Tensor, cond: torch.Tensor, length: int, span: tuple[int, int]) -> torch.Tensor:
    """(B, D) values for every token except `span`, which takes `cond`'s: (B, length, D)."""
    start, end = span
    b, d = main.shape
    return torch.cat([main[:, None].expand(b, start, d), cond[:, None].expand(b, end - start, d),
                      main[:, None].expand(b, length - end, d)], dim=1)


class JointTransformerBlock(nn.Module):
    """Sandwich-norm block; with `modulation`, adaLN scales the normed inputs and tanh-gates the residuals."""

    def __init__(self, cfg: NextDiTConfig, modulation: bool = True):
        super().__init__()
        dim = cfg.dim
        self.attention = JointAttention(dim, cfg.n_heads, cfg.kv_heads, cfg.qk_norm)
        self.feed_forward = FeedForward(dim, 4 * dim, cfg.multiple_of, cfg.ffn_dim_multiplier)
        self.attention_norm1 = RMSNorm(dim, eps=cfg.norm_eps)
        self.ffn_norm1 = RMSNorm(dim, eps=cfg.norm_eps)
        self.attention_norm2 = RMSNorm(dim, eps=cfg.norm_eps)
        self.ffn_norm2 = RMSNorm(dim, eps=cfg.norm_eps)
        self.modulation = modulation
        if modulation:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.t_dim, 4 * dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope: Rope, adaln: torch.Tensor | None = None,
                adaln_cond: torch.Tensor | None = None, cond_span: tuple[int, int] | None = None) -> torch.Tensor:
        """`adaln_cond` modulates the tokens in `cond_span` instead of `adaln` (Tar's t = 1 condition tokens)."""
        if not self.modulation:
            x = x + self.attention_norm2(self.attention(self.attention_norm1(x), mask, rope))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        mods = self.adaLN_modulation(adaln).chunk(4, dim=1)
        if adaln_cond is not None and cond_span is not None:
            cond_mods = self.adaLN_modulation(adaln_cond).chunk(4, dim=1)
            mods = tuple(_per_token(m, c, x.shape[1], cond_span) for m, c in zip(mods, cond_mods, strict=True))
        scale_msa, gate_msa, scale_mlp, gate_mlp = mods
        gate_msa, gate_mlp = (g.unsqueeze(1) if g.dim() == 2 else g for g in (gate_msa, gate_mlp))
        x = x + gate_msa.tanh() * self.attention_norm2(
            self.attention(modulate(self.attention_norm1(x), scale_msa), mask, rope))
        return x + gate_mlp.tanh() * self.ffn_norm2(self.feed_forward(modulate(self.ffn_norm1(x), scale_mlp)))


class FinalLayer(nn.Module):
    def __init__(self, cfg: NextDiTConfig):
        super().__init__()
        self.norm_final = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(cfg.dim, cfg.patch_size ** 2 * cfg.in_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.t_dim, cfg.dim))

    def forward(self, x: torch.Tensor, adaln: torch.Tensor) -> torch.Tensor:
        return self.linear(modulate(self.norm_final(x), self.adaLN_modulation(adaln)))


# --------------------------------------------------------------------------------------------------------- the model
@dataclass
class Lumina2Context:
    """The t-independent part of the sequence: refined caption (real tokens only) and condition tokens."""

    caption: torch.Tensor  # (B or 1, cap_len, dim)
    cond: torch.Tensor  # (B, cond_len, dim)
    cap_len: int
    cond_hw: tuple[int, int]  # condition grid in tokens
    rope: Rope = field(repr=False)  # rotation of caption + condition tokens


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p * p * C): tokens row-major, each in (pH, pW, C) order."""
    b, c, h, w = x.shape
    return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, p: int, c: int, hw: tuple[int, int]) -> torch.Tensor:
    b = tokens.shape[0]
    gh, gw = hw[0] // p, hw[1] // p
    return tokens.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hw[0], hw[1])


class NextDiT(nn.Module):
    """Lumina-Image-2.0 NextDiT + Tar condition branch; predicts the flow velocity (t = 0 noise, t = 1 data)."""

    def __init__(self, config: NextDiTConfig):
        super().__init__()
        self.config = cfg = config
        p = cfg.patch_size
        self.x_embedder = nn.Linear(p * p * cfg.in_channels, cfg.dim)
        self.cond_embedder = nn.Sequential(RMSNorm(p * p * cfg.cond_in_channels, eps=cfg.norm_eps),
                                           nn.Linear(p * p * cfg.cond_in_channels, cfg.dim))
        self.noise_refiner = nn.ModuleList(JointTransformerBlock(cfg) for _ in range(cfg.n_refiner_layers))
        self.cond_refiner = nn.ModuleList(JointTransformerBlock(cfg, False) for _ in range(cfg.n_refiner_layers))
        self.context_refiner = nn.ModuleList(JointTransformerBlock(cfg, False) for _ in range(cfg.n_refiner_layers))
        self.t_embedder = TimestepEmbedder(cfg.t_dim)
        self.cap_embedder = nn.Sequential(RMSNorm(cfg.cap_feat_dim, eps=cfg.norm_eps),
                                          nn.Linear(cfg.cap_feat_dim, cfg.dim))
        self.layers = nn.ModuleList(JointTransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_final = RMSNorm(cfg.dim, eps=cfg.norm_eps)  # in the release, unused by the forward pass
        self.final_layer = FinalLayer(cfg)

    # ------------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path, *, cap_feat_dim: int = 2304, ema: bool = True,
                        torch_dtype: torch.dtype = torch.float32) -> NextDiT:
        """Load a Tar-Lumina2 folder: ``model_args.pth`` (names the architecture) + ``consolidated_ema.00-of-01.pth``.

        `cap_feat_dim` is the text encoder's hidden size (2304 for gemma-2-2b), which upstream passes at build time.
        """
        path = Path(path)
        config = read_model_args(path, cap_feat_dim=cap_feat_dim)
        weights = path / f"consolidated{'_ema' if ema else ''}.00-of-01.pth"
        if not weights.is_file():
            raise CheckpointError(f"{weights}: no such file; download the release with "
                                  f"`huggingface-cli download {LUMINA2_HUB_ID}` and pass its folder")
        state = {k: v.to(torch_dtype) for k, v in read_state_dict(weights).items()}
        model = build_on_meta(cls, config)
        load_strict(model, state, what=str(weights), assign=True)
        return model.eval().requires_grad_(False)

    # -------------------------------------------------------------------------------------------- the sequence parts
    @staticmethod
    def condition_time(t: torch.Tensor) -> torch.Tensor:
        """Tar modulates condition tokens as clean data: t = 1 whatever the current t."""
        return torch.ones_like(t)

    def _rope(self, ids: torch.Tensor) -> Rope:
        cfg = self.config
        return rope_for(ids, cfg.axes_dims, cfg.axes_lens, cfg.rope_theta)

    def embed_caption(self, cap_feats: torch.Tensor, cap_mask: torch.Tensor) -> torch.Tensor:
        """Caption branch on the padded caption (B, L, cap_feat_dim) -> (B, L, dim).

        As upstream, padded positions get a zero rotation and are masked as keys; only the first
        ``cap_mask.sum()`` rows are used later.
        """
        cap_len = _caption_length(cap_mask)
        ids, _, _ = position_ids(cap_len, (0, 0), (0, 0), device=cap_feats.device)
        rope = self._rope(ids.unsqueeze(0))
        pad = cap_feats.shape[1] - cap_len
        rope = Rope(F.pad(rope.cos, (0, 0, 0, pad)), F.pad(rope.sin, (0, 0, 0, pad)))
        x = self.cap_embedder(cap_feats.to(self.dtype))
        mask = cap_mask.bool()
        for layer in self.context_refiner:
            x = layer(x, mask, rope)
        return x

    def embed_condition(self, cond: torch.Tensor, cap_len: int) -> torch.Tensor:
        """Condition branch: (B, cond_in_channels, H, W) grid -> (B, H/p * W/p, dim) refined tokens."""
        p = self.config.patch_size
        _, cond_ids, _ = position_ids(cap_len, (cond.shape[2] // p, cond.shape[3] // p), (0, 0), device=cond.device)
        x = self.cond_embedder(patchify(cond.to(self.dtype), p))
        rope = self._rope(cond_ids.unsqueeze(0))
        for layer in self.cond_refiner:
            x = layer(x, None, rope)
        return x

    def prepare_context(self, cap_feats: torch.Tensor, cap_mask: torch.Tensor, cond: torch.Tensor) -> Lumina2Context:
        """Caption + condition branches, run once per sampling run (neither depends on t).

        `cap_feats` (1 or B, L, cap_feat_dim) with a right-padded `cap_mask` (same for every row); `cond`
        (B, cond_in_channels, H, W) with H, W multiples of the patch size.
        """
        cfg = self.config
        if cond.dim() != 4 or cond.shape[1] != cfg.cond_in_channels or cond.shape[2] % cfg.patch_size \
                or cond.shape[3] % cfg.patch_size:
            raise ValueError(f"cond must be (B, {cfg.cond_in_channels}, H, W) with H, W multiples of "
                             f"{cfg.patch_size}, got {tuple(cond.shape)}")
        cap_len = _caption_length(cap_mask)
        caption = self.embed_caption(cap_feats, cap_mask)[:, :cap_len]
        cond_tokens = self.embed_condition(cond, cap_len)
        cond_hw = (cond.shape[2] // cfg.patch_size, cond.shape[3] // cfg.patch_size)
        cap_ids, cond_ids, _ = position_ids(cap_len, cond_hw, (0, 0), device=cond.device)
        return Lumina2Context(caption, cond_tokens, cap_len, cond_hw, self._rope(torch.cat([cap_ids, cond_ids])[None]))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Lumina2Context) -> torch.Tensor:
        """Velocity for latents x (B, in_channels, H, W) at times t (B,) or scalar, in [0, 1]; output in x's shape."""
        cfg = self.config
        p = cfg.patch_size
        b, c, h, w = x.shape
        if c != cfg.in_channels or h % p or w % p:
            raise ValueError(f"x must be (B, {cfg.in_channels}, H, W) with H, W multiples of {p}, got {tuple(x.shape)}")
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t
        adaln = self.t_embedder(t)
        adaln_cond = self.t_embedder(self.condition_time(t))

        _, _, img_ids = position_ids(context.cap_len, context.cond_hw, (h // p, w // p), device=x.device)
        img_rope = self._rope(img_ids[None])
        img = self.x_embedder(patchify(x.to(self.dtype), p))
        for layer in self.noise_refiner:
            img = layer(img, None, img_rope, adaln)

        n_cap, n_cond = context.cap_len, context.cond.shape[1]
        seq = torch.cat([context.caption.expand(b, -1, -1), context.cond.expand(b, -1, -1), img], dim=1)
        rope = Rope.cat([context.rope, img_rope])
        for layer in self.layers:
            seq = layer(seq, None, rope, adaln, adaln_cond, (n_cap, n_cap + n_cond))
        out = self.final_layer(seq[:, n_cap + n_cond:], adaln)
        return unpatchify(out, p, cfg.in_channels, (h, w))

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.weight.dtype


def _caption_length(cap_mask: torch.Tensor) -> int:
    """Number of real caption tokens; the mask must be right-padded and the same for every row."""
    lengths = cap_mask.sum(dim=1)
    n = int(lengths[0])
    expected = (torch.arange(cap_mask.shape[1], device=cap_mask.device) < n).to(cap_mask.dtype)
    if not bool((cap_mask == expected).all()):
        raise ValueError("cap_mask must be right-padded (ones then zeros) and identical for every row")
    return n


def read_model_args(path: str | Path, *, cap_feat_dim: int = 2304) -> NextDiTConfig:
    """The architecture named by ``model_args.pth`` (a pickled argparse.Namespace, read without running code)."""
    file = Path(path) / MODEL_ARGS_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: no such file; download the release with "
                              f"`huggingface-cli download {LUMINA2_HUB_ID}` and pass its folder")
    args = read_checkpoint(file)
    fields = dict(args) if isinstance(args, dict) else args.fields() if hasattr(args, "fields") else None
    if not fields or "model" not in fields:
        raise CheckpointError(f"{file}: expected the training arguments (an argparse.Namespace with `model`), "
                              f"got {type(args).__name__}")
    arch = NEXTDIT_ARCHS.get(fields["model"])
    if arch is None:
        raise CheckpointError(f"{file}: unknown architecture {fields['model']!r}; known: {sorted(NEXTDIT_ARCHS)}")
    if "qk_norm" not in fields:
        raise CheckpointError(f"{file}: the training arguments lack `qk_norm` (upstream reads it to build the model)")
    return NextDiTConfig(**arch, qk_norm=bool(fields["qk_norm"]), cap_feat_dim=cap_feat_dim)
