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
    verify_cached: bool = True  # False: like torch hub, the digest is checked on download only
    gated: bool = False  # the hub asks for a login and an accepted licence before downloading

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
    pixel_range: what the network reads and writes; `BaseTokenizer` converts from/to [0,1] at the interface.
        `output_range` when the decoder writes another range than the encoder reads (TA-Tok reads [0,1] and
        normalises itself; its VQ / VAE decoders write [-1,1]).
    encoder_resolution / encoder_resize: the encoder's own input size when it differs from `resolution` (the crop
        the benchmark compares at), and how the model resizes to it (`"bilinear-antialias"`, `"bilinear"`, ...).
    stochastic: decoding samples (AR / diffusion de-tokenizers): `decode` takes per-image generators.
    settings: named generation settings with their defaults (steps, guidance, temperature, top_k...), recorded
        with every result; `presets` names alternative settings (e.g. "upstream").
    shared: names of sub-models that other specs may share (loaded once per run, keyed by their files).
    resolution_step: the input sizes the architecture accepts besides `resolution`: any multiple of this step (a
        convolutional autoencoder's spatial downsampling factor). None: the size is fixed (learned position
        embeddings, a de-tokenizer that paints one size), and `--resolution` is refused for it.
    random_config: the released network's configuration as data, for `load(name, random_weights=True)` (speed
        without weights: the full-size network with random initialisation; no file is read). Where the release keeps
        its configuration in a downloaded file (config.json), this is a static copy of it; `{}` when the spec alone
        fixes the architecture. None: this tokenizer cannot be built at its released size without its files.
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
    pixel_range: tuple[float, float] = (0.0, 1.0)
    output_range: tuple[float, float] | None = None
    encoder_resolution: int | None = None
    encoder_resize: str = "bilinear-antialias"
    stochastic: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolution_step: int | None = None
    random_config: dict[str, Any] | None = None

    def accepts_resolution(self, resolution: int) -> bool:
        """Whether the architecture runs at `resolution`: its own, or any multiple of `resolution_step`."""
        step = self.resolution_step
        return resolution == self.resolution or (step is not None and resolution > 0 and resolution % step == 0)

    @property
    def resolutions_text(self) -> str:
        """The sizes it accepts, in a few words: "fixed at 256 px" or "multiples of 16 px"."""
        step = self.resolution_step
        return f"fixed at {self.resolution} px" if step is None else f"multiples of {step} px"

    def resolved_settings(self, preset: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults, then a named preset, then explicit overrides; unknown names are an error, not ignored."""
        if preset is not None and preset not in self.presets:
            raise ValueError(f"{self.name}: unknown preset {preset!r}; known: {', '.join(self.presets) or 'none'}")
        out = {**self.settings, **(self.presets.get(preset, {}) if preset else {})}
        unknown = sorted(set(overrides or {}) - set(out))
        if unknown:
            raise ValueError(f"{self.name}: unknown setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(out) or 'none (this tokenizer has no generation settings)'}")
        return {**out, **(overrides or {})}

    def facts(self) -> dict[str, Any]:
        """What a report needs to know about this tokenizer, as plain JSON data (written into the run's records)."""
        return {"family": self.family, "kind": self.kind, "resolution": self.resolution,
                "encoder_resolution": self.encoder_resolution, "token_shape": list(self.token_shape),
                "num_tokens": self.num_tokens, "codebook_size": self.codebook_size,
                "bits_per_token": self.bits_per_token, "bits_per_pixel": self.bits_per_pixel,
                "description": self.description, "published": dict(self.published) if self.published else None,
                "tiny": self.tiny, "stochastic": self.stochastic, "pixel_range": list(self.pixel_range),
                "output_range": list(self.output_range or self.pixel_range), "settings": dict(self.settings)}

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_shape)

    @property
    def bits_per_pixel(self) -> float:
        """Bits needed to store one image's tokens, per pixel of the tokenizer's input."""
        return self.num_tokens * self.bits_per_token / (self.resolution * self.resolution)
