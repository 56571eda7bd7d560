"""AR-DTok configuration: the part of upstream's `ModelArgs` that inference reads, and the `llama-abs-*` sizes.

A released checkpoint names its size (`{"model": {"name": "llama-abs-LP", "args": {...}}}`); the name fixes
(n_layer, n_head, dim) and the args fill the remaining `ModelArgs` fields. Upstream (Tar@47da8e1) passes the args
to `ModelArgs(**args)`, so an unknown field is a TypeError there too; here every field is either used, or listed in
`IGNORED_ARGS` with the reason it cannot change inference, or refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# (n_layer, n_head, dim). The first seven are upstream's registry; "llama-abs-tiny" is the golden tests' size.
AR_DTOK_SIZES: dict[str, tuple[int, int, int]] = {
    "llama-abs-S": (12, 6, 384),
    "llama-abs-B": (12, 12, 768),
    "llama-abs-L": (24, 16, 1024),
    "llama-abs-LP": (30, 20, 1280),
    "llama-abs-XL": (36, 20, 1280),
    "llama-abs-XXL": (48, 24, 1536),
    "llama-abs-XXXL": (48, 40, 2560),
    "llama-abs-tiny": (2, 4, 64),
}

# ModelArgs fields accepted from a file and dropped, with why they cannot change an eval-mode forward / sampling.
IGNORED_ARGS: dict[str, str] = {
    "token_dropout_p": "dropout: identity in eval mode",
    "attn_dropout_p": "dropout: identity in eval mode",
    "resid_dropout_p": "dropout: identity in eval mode",
    "ffn_dropout_p": "dropout: identity in eval mode",
    "drop_path_rate": "stochastic depth: identity in eval mode",
    "class_dropout_prob": "condition dropout: applied only while training",
    "initializer_range": "initialisation only; the checkpoint overwrites every weight",
    "rope_base": "declared in ModelArgs but never read by ARModel (absolute PE, no RoPE)",
    "max_batch_size": "declared in ModelArgs but never read (generate sizes its caches from the batch)",
    "num_classes": "only read by model_type 'class_cond' (LabelEmbedder)",
    "cond_vocab_size": "only read by model_type 'indice_cond'",
}
# Fixed by the registry name; upstream's factories pass them explicitly, so args repeating them crash there.
SIZE_ARGS = ("n_layer", "n_head", "dim")
# ModelArgs' default model_type: a file without one describes a class-conditional model.
UPSTREAM_DEFAULT_MODEL_TYPE = "class_cond"


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of k that is >= n (upstream rounds FFN widths and cache lengths this way)."""
    return n if n % k == 0 else n + k - n % k


@dataclass(frozen=True)
class ARDTokConfig:
    """LlamaGen-style decoder with learned (or fixed sin-cos) absolute positions and a linear condition prefix.

    Defaults are upstream `ModelArgs` defaults, except `model_type`: this port builds only `clip_cond`.
    `cls_token_num` sizes the position table; generation may use fewer condition tokens (see `ARDTok.generate`).
    """

    n_layer: int
    n_head: int
    dim: int
    vocab_size: int = 8192
    cond_dim: int = 1152
    cls_token_num: int = 1
    max_seq_len: int = 2048
    model_type: str = "clip_cond"
    use_fixed_pe: bool = False
    norm_eps: float = 1e-5
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    n_kv_head: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "dim", "vocab_size", "cond_dim", "cls_token_num", "max_seq_len",
                     "multiple_of"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ARDTokConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.n_head:
            raise ValueError(f"ARDTokConfig: dim {self.dim} is not divisible by n_head {self.n_head}")
        if not (isinstance(self.norm_eps, float | int) and self.norm_eps > 0):
            raise ValueError(f"ARDTokConfig.norm_eps must be > 0, got {self.norm_eps!r}")
        if self.model_type != "clip_cond":
            # class_cond / indice_cond exist upstream but no released AR-DTok uses them (and upstream's CFG path
            # for indice_cond reads an attribute ARModel never sets).
            raise NotImplementedError(f"AR-DTok model_type {self.model_type!r} is not ported; only 'clip_cond' is")
        if self.n_kv_head not in (None, self.n_head):
            # Upstream sizes its KV cache with n_head and would broadcast or crash for grouped-query attention.
            raise NotImplementedError(f"n_kv_head={self.n_kv_head} != n_head={self.n_head} (grouped-query "
                                      "attention) is not ported: upstream's KV cache does not support it")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def ffn_hidden_dim(self) -> int:
        """SwiGLU width: int(2 * 4 * dim / 3) (times ffn_dim_multiplier), rounded up to `multiple_of`."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)

    @property
    def pe_length(self) -> int:
        """Rows of `abs_pe`: condition prefix + codes, minus the last code (never fed back)."""
        return self.max_seq_len + self.cls_token_num - 1

    @classmethod
    def from_name(cls, name: str, args: Mapping[str, Any] | None = None) -> ARDTokConfig:
        """Config for a registry name plus a checkpoint's `args` (upstream `models.make` semantics, made strict).

        Raises ValueError for an unknown name, an unknown arg, or an arg that repeats the size the name fixes;
        NotImplementedError for settings upstream has but this port does not build. A missing `model_type` means
        upstream's default 'class_cond'.
        """
        if name not in AR_DTOK_SIZES:
            raise ValueError(f"unknown AR-DTok model name {name!r}; known: {', '.join(AR_DTOK_SIZES)}")
        args = dict(args or {})
        repeated = [k for k in SIZE_ARGS if k in args]
        if repeated:
            raise ValueError(f"AR-DTok args repeat {', '.join(repeated)}, which the name {name!r} fixes")
        if args.pop("frame_prediction", False):
            raise NotImplementedError("AR-DTok frame_prediction=True is not ported")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known - set(IGNORED_ARGS))
        if unknown:
            raise ValueError(f"AR-DTok args not understood by this port: {', '.join(unknown)}")
        used = {k: v for k, v in args.items() if k in known}
        used.setdefault("model_type", UPSTREAM_DEFAULT_MODEL_TYPE)
        n_layer, n_head, dim = AR_DTOK_SIZES[name]
        return cls(n_layer=n_layer, n_head=n_head, dim=dim, **used)
