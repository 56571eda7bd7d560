"""TA-Tok (Tar) family: one text-aligned encoder, three de-tokenizers that paint an image from its tokens.

encode: the benchmark's crop -> (BaseTokenizer) resize to TA-Tok's 384 px (bilinear, antialias as in current
torchvision) -> ids (B, 729) of a 65,536-code SimVQ codebook (argmax by default; `quantizer=sample` draws as
upstream's default does). decode: ids -> TA-Tok decoder features (`decode_from_indices`, the t2i path) -> a
de-tokenizer:
- `ar`: AR-DTok generates LlamaGen VQ-16 codes (per-image generators, KV cache), the VQ decoder paints them;
- `sana` / `lumina2`: a diffusion transformer conditioned on the features (`tok/sana_dtok`, `tok/lumina2_dtok`).
The encoder is a shared component: the three de-tokenizers of one run use one loaded copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from tok.ar_dtok import ARDTok
from tok.llamagen_vq import VQModel
from tok.lumina2_dtok import Lumina2DTok
from tok.sana_dtok import SanaDTok
from tok.tatok import TATok
from vision_tokenizers.base import BaseTokenizer, Generators, pil_to_tensor01, tensor01_to_pil
from vision_tokenizers.components import shared_component
from vision_tokenizers.spec import TokenizerSpec

TATOK_FILE = "ta_tok.pth"


def load_encoder(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> TATok:
    """The TA-Tok network of these files, loaded once per run (shared by every TA-Tok tokenizer)."""
    path = files[TATOK_FILE]

    def build() -> TATok:
        return TATok.from_pretrained(path).to(device=device, dtype=dtype).eval().requires_grad_(False)

    return shared_component("tatok", [path], device, dtype, build)


class TATokTokenizer(BaseTokenizer):
    """ids (B, N) <-> pixels; subclasses implement `paint(features, generator)` in their own pixel range."""

    def __init__(self, spec: TokenizerSpec, encoder: TATok, device: torch.device, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        self.encoder = encoder  # already prepared (shared): never moved or cast here
        self.pool_scale = int(spec.config.get("pool_scale", 1))
        self.last_codes: dict[str, tuple[torch.Tensor, int]] = {}

    @property
    def samples_on_encode(self) -> bool:
        return self.settings.get("quantizer", "argmax") == "sample"

    def _encode(self, pixels01: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        if pixels01.shape[-1] != self.encoder.config.input_size:
            raise ValueError(f"{self.spec.name}: TA-Tok expects {self.encoder.config.input_size} px inputs, got "
                             f"{pixels01.shape[-1]} (spec.encoder_resolution is wrong)")
        return self.encoder.encode(pixels01, pool_scale=self.pool_scale, deterministic=not self.samples_on_encode,
                                   generator=_as_list(generator))

    def _decode(self, tokens: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.dtype.is_floating_point:
            raise ValueError(f"{self.spec.name}: expected (B, N) integer ids, got {tuple(tokens.shape)}")
        size = self.encoder.config.codebook_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= size):
            raise ValueError(f"{self.spec.name}: ids must be in [0, {size})")
        features = self.encoder.decode_from_indices(tokens)
        return self.paint(features, generator)

    def paint(self, features: torch.Tensor, generator: Generators) -> torch.Tensor:
        raise NotImplementedError

    def painted_resolution(self) -> int | None:
        """The side length the de-tokenizer paints, as its files say (None when a setting decides it)."""
        return None

    def adapt_width(self, features: torch.Tensor, width: int) -> torch.Tensor:
        """Tiny specs only (`tiny_width_adapter: tile`): 48-wide tiny TA-Tok features tiled to the de-tokenizer's
        width; the real encoder already gives 1152."""
        if self.spec.config.get("tiny_width_adapter") == "tile":
            return features.repeat(1, 1, width // features.shape[-1])
        return features

    def aux_tokens(self) -> dict[str, tuple[torch.Tensor, int]]:
        """Codes the de-tokenizer produced in the last decode (name -> (codes, codebook size)), for statistics."""
        return self.last_codes


class TATokARDTok(TATokTokenizer):
    """TA-Tok + AR-DTok + LlamaGen VQ-16: pixels in [-1, 1] out of the VQ decoder."""

    def __init__(self, spec: TokenizerSpec, encoder: TATok, ar: ARDTok, vq: VQModel, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(spec, encoder, device, dtype)
        self.ar = self.prepare(ar)
        self.vq = self.prepare(vq)

    def paint(self, features: torch.Tensor, generator: Generators) -> torch.Tensor:
        s = self.settings
        codes = self.ar.generate(features.to(self.dtype), cfg_scale=float(s["cfg_scale"]),
                                 temperature=float(s["temperature"]), top_k=int(s["top_k"]), top_p=float(s["top_p"]),
                                 generator=generator)
        self.last_codes = {"ar": (codes, self.ar.config.vocab_size)}
        return self.vq.decode_code(codes)  # [-1, 1]; BaseTokenizer converts and clamps

    def painted_resolution(self) -> int:
        return round(self.ar.config.max_seq_len ** 0.5) * self.vq.config.downsample_factor


class TATokSana(TATokTokenizer):
    """TA-Tok + Tar-SANA: decoder features as SANA's prompt embeddings; diffusers' SanaPipeline paints [0, 1]."""

    def __init__(self, spec: TokenizerSpec, encoder: TATok, sana: SanaDTok, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(spec, encoder, device, dtype)
        self.sana = sana.to(device=device, dtype=dtype)  # the VAE keeps fp32, as upstream

    def paint(self, features: torch.Tensor, generator: Generators) -> torch.Tensor:
        features = self.adapt_width(features, self.sana.caption_channels)
        s = self.settings
        return self.sana.generate(features, steps=int(s["steps"]), guidance_scale=float(s["guidance_scale"]),
                                  generator=_as_list(generator))

    def painted_resolution(self) -> int:
        return self.sana.default_size


class TATokLumina2(TATokTokenizer):
    """TA-Tok + Tar-Lumina2 (NextDiT with a condition branch, FLUX VAE): paints `paint_resolution` px in [0, 1].

    The published comparison scored it at 512 px after a PIL LANCZOS resize of the 1024 px painting; we do the same
    on the rounded 8-bit image (setting `output_resize`), unless `native` keeps the painting's own size.
    """

    def __init__(self, spec: TokenizerSpec, encoder: TATok, lumina: Lumina2DTok, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(spec, encoder, device, dtype)
        self.lumina = self.prepare(lumina)

    @property
    def resolution(self) -> int:
        return int(self.settings["paint_resolution"]) if self.settings.get("native") else self.spec.resolution

    def paint(self, features: torch.Tensor, generator: Generators) -> torch.Tensor:
        features = self.adapt_width(features, self.lumina.cond_in_channels)
        s = self.settings
        images = self.lumina.generate(features, steps=int(s["steps"]), time_shift=float(s["time_shift"]),
                                      guidance_scale=float(s["guidance_scale"]),
                                      resolution=int(s["paint_resolution"]),
                                      generator=_as_list(generator))
        if s.get("native") or images.shape[-1] == self.spec.resolution:
            return images
        if s["output_resize"] != "lanczos":
            raise ValueError(f"{self.spec.name}: unknown output_resize {s['output_resize']!r} (known: lanczos)")
        small = [im.resize((self.spec.resolution,) * 2, Image.Resampling.LANCZOS) for im in tensor01_to_pil(images)]
        out = pil_to_tensor01(small).to(images.device)
        finite = torch.isfinite(images.float()).flatten(1).all(1)  # the 8-bit round trip would hide NaN as black
        out[~finite] = torch.nan
        return out


def _as_list(generator: Generators) -> torch.Generator | list[torch.Generator] | None:
    """The ports take one generator or a list of per-row ones (not any sequence)."""
    return list(generator) if isinstance(generator, (list, tuple)) else generator


def _file(files: dict[str, Path], suffix: str, what: str) -> Path:
    found = [p for name, p in files.items() if name.endswith(suffix) and name != TATOK_FILE]
    if len(found) != 1:
        raise ValueError(f"expected one {what} file ending in {suffix}, got {sorted(files)}")
    return found[0]


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> TATokTokenizer:
    encoder = load_encoder(files, device, dtype)
    detok = spec.config.get("detok", "ar")
    if detok == "lumina2":
        lumina = Lumina2DTok.from_pretrained(files["model_args.pth"].parent, files["vae/config.json"].parent,
                                             files["config.json"].parent, torch_dtype=dtype)
        tok: TATokTokenizer = TATokLumina2(spec, encoder, lumina, device, dtype)
    elif detok == "sana":
        folder = files["model_index.json"].parent  # the release folder (local or the hub snapshot)
        tok = TATokSana(spec, encoder, SanaDTok.from_pretrained(folder, torch_dtype=dtype), device, dtype)
    else:
        ar = ARDTok.from_pretrained(_file(files, ".pth", "AR-DTok"))
        vq = VQModel.from_pretrained(_file(files, ".pt", "LlamaGen VQ"))
        tok = TATokARDTok(spec, encoder, ar, vq, device, dtype)
    _check_spec(spec, tok)
    return tok


def build_random(spec: TokenizerSpec, device: torch.device, dtype: torch.dtype) -> TATokTokenizer:
    """TA-Tok + AR-DTok + VQ-16 at their released sizes from `spec.random_config` (the constructor args the released
    files carry: ``tatok`` = ``ta_tok.pth``'s ``model.args``, ``ar_dtok`` = the AR file's ``model`` name and args,
    ``llamagen_vq`` = `VQConfig` fields), random weights (speed only). The diffusion de-tokenizers have no such
    config here."""
    from tok.ar_dtok import ARDTokConfig
    from tok.llamagen_vq import VQConfig
    from tok.tatok import TATokConfig, resolve_teacher_vision
    from vision_tokenizers.random_weights import random_network, unsupported

    config = spec.random_config or {}
    if spec.config.get("detok", "ar") != "ar" or not {"tatok", "ar_dtok", "llamagen_vq"} <= set(config):
        raise unsupported(spec.name)
    args = config["tatok"]
    vision = resolve_teacher_vision(None, args["teacher"], Path("/nonexistent"))  # the built-in teacher config
    tatok_config = TATokConfig.from_args(args, vision, source=f"{spec.name} random_config")

    def build_encoder() -> TATok:
        return random_network(TATok, tatok_config, device=device).to(dtype=dtype)

    # one random encoder per run, like the released one (the key is its config, as the file is for the real one)
    encoder = shared_component(f"tatok-random:{json.dumps(args, sort_keys=True)}", [], device, dtype, build_encoder)
    ar = random_network(ARDTok, ARDTokConfig.from_name(config["ar_dtok"]["name"], config["ar_dtok"]["args"]),
                        device=device)
    vq = random_network(VQModel, VQConfig(**config["llamagen_vq"]), device=device)
    tok = TATokARDTok(spec, encoder, ar, vq, device, dtype)
    _check_spec(spec, tok)
    return tok


def _check_spec(spec: TokenizerSpec, tok: TATokTokenizer) -> None:
    """The spec's numbers are facts of the files: a mismatch is a wrong spec, said at load, not a wrong table."""
    cfg = tok.encoder.config
    grid = round(tok.encoder.num_tokens ** 0.5) // tok.pool_scale
    got: dict[str, Any] = {"encoder_resolution": cfg.input_size, "codebook_size": cfg.codebook_size,
                           "num_tokens": grid * grid}
    want: dict[str, Any] = {"encoder_resolution": spec.encoder_resolution, "codebook_size": spec.codebook_size,
                            "num_tokens": spec.num_tokens}
    painted = tok.painted_resolution()
    if painted is not None:
        got["resolution"], want["resolution"] = painted, spec.resolution
    if got != want:
        raise ValueError(f"{spec.name}: the files give {got}, the spec says {want}")
