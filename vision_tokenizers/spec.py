"""Tokenizer specs: plain data describing where a tokenizer's weights come from and what it produces."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class WeightFile:
    """One file a tokenizer needs, with its origin.

    Looked up as ``<weights_dir>/<local_dir>/<filename>`` first, then downloaded from the hub (``repo_id``) or a
    plain ``url``. ``sha256`` (when known) is checked on whatever file is used.
    """

    filename: str
    local_dir: str
    repo_id: str | None = None
    url: str | None = None
    sha256: str | None = None
    revision: str | None = None

    @property
    def origin(self) -> str:
        if self.repo_id:
            return f"hf://{self.repo_id}/{self.filename}"
        return self.url or "(no public origin)"


@dataclass(frozen=True)
class TokenizerSpec:
    """What a tokenizer is: everything `vision_tokenizers.load` needs to build it, and what the report prints.

    kind: "discrete" (integer ids from a codebook) or "continuous" (latents, possibly quantised to fixed bits).
    token_shape: shape of one image's tokens (without the batch dimension).
    bits_per_token: log2(codebook_size) for discrete ids, the storage bits of one latent element otherwise.
    """

    name: str
    family: str
    resolution: int
    kind: Literal["discrete", "continuous"]
    token_shape: tuple[int, ...]
    bits_per_token: float
    codebook_size: int | None = None
    weights: tuple[WeightFile, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    tiny: bool = False
    published: dict[str, float] | None = None

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_shape)

    @property
    def bits_per_pixel(self) -> float:
        """Bits needed to store one image's tokens, per pixel of the tokenizer's input."""
        return self.num_tokens * self.bits_per_token / (self.resolution * self.resolution)
