"""AR-DTok (Tar, csuhan/Tar@47da8e1 `tok/ar_dtok/ar_model.py` + `generate.py`), written from scratch.

A LlamaGen-style decoder: the condition (TA-Tok `rec` features) is projected by `clip_proj` into a prefix at
positions 0..T-1, VQ codes follow at T.., a learned absolute position table `abs_pe` is added to the input, then
pre-RMSNorm causal attention (no RoPE) + SwiGLU blocks, a final RMSNorm and the code head `output`.
Parameter names mirror the released state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tok.ar_dtok.config import ARDTokConfig, find_multiple
from tok.ar_dtok.sampling import Generators, check_sampling_args, code_probs, draw
from tok.checkpoint import CheckpointError, build_on_meta, load_strict, read_checkpoint, state_dict_at
from tok.layers import RMSNorm


class KVCache:
    """Keys and values of every layer for ONE generation call.

    `ARDTok.generate` creates it and drops it on return; nothing is attached to the model, so a later `forward`
    is unaffected (upstream leaves its caches on the attention modules until `reset_caches()`).
    The length is rounded up to a multiple of 8 and unfilled slots are masked, as upstream does.
    """

    def __init__(self, config: ARDTokConfig, batch: int, length: int, *, dtype: torch.dtype,
                 device: torch.device | str):
        self.length = find_multiple(length, 8)
        shape = (batch, config.n_head, self.length, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self._causal = torch.tril(torch.ones(self.length, self.length, dtype=torch.bool, device=device))

    def mask(self, positions: torch.Tensor) -> torch.Tensor:
        """(1, 1, S, length) bool: query at position p sees cache slots 0..p."""
        return self._causal[positions][None, None]

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[i], self.values[i]


class Attention(nn.Module):
    def __init__(self, config: ARDTokConfig):
        super().__init__()
        self.n_head, self.head_dim, self.dim = config.n_head, config.head_dim, config.dim
        self.wqkv = nn.Linear(config.dim, 3 * config.dim, bias=False)  # rows: [q; k; v]
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal self-attention; with `kv` (a layer's cache) the new keys/values are written at `positions`
        and the queries attend over the whole cache under `mask`."""
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, self.n_head, self.head_dim).transpose(1, 2)
                   for t in self.wqkv(x).split(self.dim, dim=-1))
        if kv is not None:
            k_cache, v_cache = kv
            k_cache[:, :, positions] = k.to(k_cache.dtype)
            v_cache[:, :, positions] = v.to(v_cache.dtype)
            k, v = k_cache, v_cache
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.wo(out.transpose(1, 2).contiguous().view(b, s, self.dim))


class FeedForward(nn.Module):
    def __init__(self, config: ARDTokConfig):
        super().__init__()
        hidden = config.ffn_hidden_dim
        self.w1 = nn.Linear(config.dim, hidden, bias=False)
        self.w3 = nn.Linear(config.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: ARDTokConfig):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), kv, positions, mask)
        return h + self.feed_forward(self.ffn_norm(h))


def sincos_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed table [sin(p * w) | cos(p * w)], w_i = 10000^(-2i/dim), computed in float64."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


class ARDTok(nn.Module):
    """AR-DTok: TA-Tok condition features (B, T, cond_dim) -> VQ codes (B, max_seq_len)."""

    def __init__(self, config: ARDTokConfig):
        super().__init__()
        self.config = config
        self.clip_proj = nn.Linear(config.cond_dim, config.dim)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        rows = config.pe_length
        if config.use_fixed_pe:
            # A persistent buffer: upstream saves it in the state dict, and a strict load takes the file's values.
            self.register_buffer("abs_pe", sincos_positions(rows, config.dim)[None])
        else:
            self.abs_pe = nn.Parameter(torch.randn(1, rows, config.dim) * 0.02)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path) -> ARDTok:
        """Released layout ``{"model": {"name", "args", "sd"}}`` -> model on CPU, fp32, eval, no grad.

        Any mismatch between file and model (unknown name or arg, missing / unexpected / mis-shaped key, `abs_pe`
        sized for another resolution) is a CheckpointError; upstream loads with strict=False and silently drops a
        mis-shaped `abs_pe`.
        """
        ckpt = read_checkpoint(path)
        spec = ckpt.get("model") if isinstance(ckpt, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(
                spec.get("args"), dict):
            raise CheckpointError(f"{path}: expected {{'model': {{'name': str, 'args': dict, 'sd': ...}}}} "
                                  "(the AR-DTok release layout)")
        state = state_dict_at(ckpt, "model", "sd", path=path)
        try:
            config = ARDTokConfig.from_name(spec["name"], spec["args"])
        except ValueError as exc:
            raise CheckpointError(f"{path}: not an AR-DTok checkpoint this port understands: {exc}") from exc
        model = build_on_meta(cls, config)
        load_strict(model, state, what=f"{path} (AR-DTok {spec['name']})", assign=True)
        return model.float().eval().requires_grad_(False)

    # ------------------------------------------------------------------------------------------------ forward
    def condition_length(self, cond: torch.Tensor) -> int:
        """Number of condition tokens T of a (B, T, cond_dim) tensor, checked against the position table."""
        if cond.ndim != 3 or cond.shape[-1] != self.config.cond_dim:
            raise ValueError(f"cond must be (B, T, {self.config.cond_dim}), got {tuple(cond.shape)}")
        t = cond.shape[1]
        if not 1 <= t <= self.config.cls_token_num:
            raise ValueError(f"{t} condition tokens, but this model's position table has room for 1.."
                             f"{self.config.cls_token_num} (cls_token_num)")
        return t

    def embed_condition(self, cond: torch.Tensor) -> torch.Tensor:
        return self.clip_proj(cond.to(self.clip_proj.weight.dtype))

    def forward(self, codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, n) codes + (B, T, cond_dim) -> logits (B, n + 1, V); `logits[:, j]` predicts code
        j from the condition and codes[:, :j]. The condition sits at positions 0..T-1, code j at T + j."""
        t = self.condition_length(cond)
        if codes.ndim != 2 or codes.shape[0] != cond.shape[0]:
            raise ValueError(f"codes must be (B, n) with B = {cond.shape[0]}, got {tuple(codes.shape)}")
        if codes.shape[1] > self.config.max_seq_len - 1:
            raise ValueError(f"at most max_seq_len - 1 = {self.config.max_seq_len - 1} codes can be fed, "
                             f"got {codes.shape[1]}")
        h = torch.cat([self.embed_condition(cond), self.tok_embeddings(codes)], dim=1)
        h = h + self.abs_pe[:, :h.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.output(self.norm(h[:, t - 1:]))

    def _cached_step(self, h: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Embedded tokens at `positions` through the cached transformer -> (B, V) logits of the next code."""
        h = h + self.abs_pe[:, positions]
        mask = cache.mask(positions)
        for i, layer in enumerate(self.layers):
            h = layer(h, cache.layer(i), positions, mask)
        return self.output(self.norm(h[:, -1]))

    # --------------------------------------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, *, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, cfg_interval: int = -1, generator: Generators = None) -> torch.Tensor:
        """Sample (B, max_seq_len) int64 codes for a (B, T, cond_dim) condition, T <= cls_token_num.

        cfg_scale > 1 runs the batch [cond; zeros] and samples from u + (c - u) * cfg_scale (upstream's
        classifier-free guidance); cfg_scale == 1 runs the condition alone, exactly as upstream. With
        cfg_interval = k >= 0, guidance stops after decode step k (the prefill and steps 0..k are guided).
        `top_k=1` is greedy. `generator`: None = torch's global RNG (upstream); one generator = upstream's
        batched draw order (seed it like upstream's `torch.manual_seed`); a list of B generators = one per row.
        """
        t = self.condition_length(cond)
        check_sampling_args(temperature, top_k, top_p)
        if not cfg_scale >= 1.0:
            raise ValueError(f"cfg_scale must be >= 1 (1 = no guidance), got {cfg_scale!r}; upstream silently "
                             "ignores guidance below 1")
        if isinstance(cfg_interval, bool) or not isinstance(cfg_interval, int) or cfg_interval < -1:
            raise ValueError(f"cfg_interval must be an int >= -1 (-1 = guide every step), got {cfg_interval!r}")
        if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != len(cond):
            raise ValueError(f"got {len(generator)} per-row generators for a batch of {len(cond)}")

        guided = cfg_scale > 1.0
        batch = torch.cat([cond, torch.zeros_like(cond)]) if guided else cond
        n_codes = self.config.max_seq_len
        cache = KVCache(self.config, len(batch), t + n_codes, dtype=self.tok_embeddings.weight.dtype,
                        device=cond.device)

        def next_code(logits: torch.Tensor, use_cfg: bool) -> torch.Tensor:
            if guided:
                c, u = logits.chunk(2)
                logits = u + (c - u) * cfg_scale if use_cfg else c
            return draw(code_probs(logits, temperature, top_k, top_p), generator)

        positions = torch.arange(t + n_codes - 1, device=cond.device)  # prefix, then every fed-back code
        code = next_code(self._cached_step(self.embed_condition(batch), positions[:t], cache), True)
        codes = [code]
        for step in range(n_codes - 1):
            fed = torch.cat([code, code]) if guided else code
            logits = self._cached_step(self.tok_embeddings(fed), positions[t + step:t + step + 1], cache)
            code = next_code(logits, cfg_interval == -1 or step <= cfg_interval)
            codes.append(code)
        return torch.cat(codes, dim=1)
