"""Open-MAGVIT2 (LFQ) family: ids are (B, h, w) int64 in [0, 2**bits), decoded through the codebook-entry path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tok.magvit2 import LoadReport, Magvit2Tokenizer, load_magvit2_checkpoint
from vision_tokenizers.base import BaseTokenizer
from vision_tokenizers.spec import TokenizerSpec

CONFIG_KEYS = ("ddconfig", "n_embed", "embed_dim", "use_ema")


def read_config(spec: TokenizerSpec, files: dict[str, Path]) -> dict[str, Any]:
    """`config.json` (upstream yaml layout, `model.init_args`) when shipped, else the spec's own config."""
    if "config.json" in files:
        raw = json.loads(Path(files["config.json"]).read_text())
        init_args = raw.get("model", {}).get("init_args", raw)
        # use_ema defaults to False in upstream's VQModel constructor
        config = {"use_ema": False, **{k: init_args[k] for k in CONFIG_KEYS if k in init_args}}
    else:
        config = dict(spec.config)
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"{spec.name}: magvit2 config lacks {', '.join(missing)}")
    return config


class Magvit2(BaseTokenizer):
    def __init__(self, spec: TokenizerSpec, model: Magvit2Tokenizer, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, load_report: LoadReport | None = None):
        super().__init__(spec, device, dtype)
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.load_report = load_report

    def _encode(self, pixels01: torch.Tensor) -> torch.Tensor:
        _, indices, _ = self.model.encode(pixels01 * 2 - 1)
        return indices

    @torch.inference_mode()
    def encode_latents(self, pixels01: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latent (B, C, h, w) in the model dtype; its signs are the bits of the ids."""
        return self.model.encoder(pixels01.to(self.device, self.dtype) * 2 - 1)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.dtype.is_floating_point:
            raise ValueError(f"{self.spec.name}: expected (B, h, w) integer ids, "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")
        size = self.model.quantize.codebook_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= size):
            raise ValueError(f"{self.spec.name}: ids must be in [0, {size})")  # `&` with bit masks would wrap silently
        x = self.model.decode_code(tokens)
        return (x.float().clamp(-1, 1) + 1) / 2


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> Magvit2:
    config = read_config(spec, files)
    ckpt = next((p for name, p in files.items() if name.endswith(".ckpt")), None)
    if ckpt is None:
        raise ValueError(f"{spec.name}: no .ckpt among the weight files {sorted(files)}")
    # Built on meta and filled by assignment: no random init of 115M parameters that are overwritten anyway.
    with torch.device("meta"):
        model = Magvit2Tokenizer(config["ddconfig"], n_embed=config["n_embed"], embed_dim=config["embed_dim"])
    report = load_magvit2_checkpoint(ckpt, model, use_ema=bool(config["use_ema"]), assign=True)
    return Magvit2(spec, model, device, dtype, load_report=report)
