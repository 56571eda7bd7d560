"""TA-Tok (Tar's text-aligned tokenizer), ported from csuhan/Tar 47da8e1 `tok/ta_tok.py`.

image [0,1] -> (x - 0.5) / 0.5 -> resize to input_size (bilinear) -> SigLIP vision tower, hidden_states[-2]
-> optional avg-pool on the token grid -> encode_task_layer (Linear, tanh) -> bottleneck (in_linear, SimVQ,
out_linear) -> ids. The Siglip2 decoder + decode_task_layer turn bottleneck outputs (or ids) into the SigLIP-width
features that AR-DTok is conditioned on ("rec").

Both towers are transformers' own classes; submodule names mirror the checkpoint (`encoder.`, `decoder.vision_model.`,
`encode_task_layer.`, `decode_task_layer.`, `bottleneck.`, `scale_layer.`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Siglip2VisionConfig, Siglip2VisionModel, SiglipVisionConfig, SiglipVisionModel

from tok.checkpoint import CheckpointError, build_on_meta, load_strict, read_checkpoint, state_dict_at
from tok.tatok.bottleneck import Bottleneck, Generators, SimVectorQuantizer
from tok.tatok.config import SO400M_TEACHER, TATokConfig, resolve_teacher_vision


class ScalingLayer(nn.Module):
    """(x - shift) / scale with persistent buffers, as upstream (the buffers are in the checkpoint)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("scale", torch.full((1, 3, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class TATokDecoder(nn.Module):
    """Holder that gives the Siglip2 decoder its checkpoint prefix `decoder.vision_model.` (upstream used a
    transformers 4.50 `Siglip2VisionModel`, which nested its tower under `vision_model`; 5.x no longer does)."""

    def __init__(self, config: Siglip2VisionConfig) -> None:
        super().__init__()
        self.vision_model = Siglip2VisionModel(config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, N, D) on a square p x p grid -> post-layernorm features (B, N, hidden)."""
        b, n, _ = z.shape
        p = _grid_side(n)
        mask = torch.ones(b, n, dtype=torch.int, device=z.device)
        shapes = torch.tensor([[p, p]] * b, device=z.device)
        return self.vision_model(z, mask, shapes).last_hidden_state


def _grid_side(n: int) -> int:
    p = int(n ** 0.5)
    if p * p != n:
        raise ValueError(f"TA-Tok works on square token grids; got {n} tokens")
    return p


class TATok(nn.Module):
    """TA-Tok encoder (image -> ids) and its feature decoder (ids / encodings -> SigLIP-width features)."""

    def __init__(self, config: TATokConfig) -> None:
        super().__init__()
        self.config = config
        self.antialias = config.antialias
        self.pool_scale = config.pool_scale
        hidden = config.encoder_hidden_size
        vision = SiglipVisionConfig(**config.vision, attn_implementation=config.attn_implementation)
        self.encoder = SiglipVisionModel(vision)
        dec_cfg = Siglip2VisionConfig(**config.decoder_config_kwargs(), attn_implementation=config.attn_implementation)
        self.decoder = TATokDecoder(dec_cfg)
        self.encode_task_layer = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.decode_task_layer = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
        quantizer = SimVectorQuantizer(config.bottleneck_dim, config.codebook_size, config.l2_normalized,
                                       config.stochastic, config.stochastic_temperature)
        self.bottleneck = Bottleneck(hidden, config.bottleneck_dim, quantizer)
        self.scale_layer = ScalingLayer()

    # ------------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path, teacher_config: str | Path | Mapping[str, Any] | None = None, *,
                        antialias: bool = True, attn_implementation: str = "sdpa") -> TATok:
        """Load a released `ta_tok.pth` (``{"model": {"args", "sd"}}``) strictly, eval mode, CPU fp32.

        `teacher_config`: see `resolve_teacher_vision` (default: the folder ``args["teacher"]`` beside the file,
        else the built-in so400m config). Keys starting with ``teacher`` are dropped before loading, as every
        upstream caller does (`from_checkpoint(..., load_teacher=False)`); everything else must match exactly.
        """
        path = Path(path)
        ckpt = read_checkpoint(path)
        sd = state_dict_at(ckpt, "model", "sd", path=path)
        args = ckpt["model"].get("args")
        if not isinstance(args, Mapping) or not isinstance(args.get("teacher", ""), str):
            raise CheckpointError(f"{path}: expected ['model']['args'] to be upstream's constructor kwargs")
        teacher = args.get("teacher", SO400M_TEACHER)  # upstream's default teacher
        vision = resolve_teacher_vision(teacher_config, teacher, path.parent)
        config = TATokConfig.from_args(args, vision, source=str(path), antialias=antialias,
                                       attn_implementation=attn_implementation)
        sd = {k: v for k, v in sd.items() if not k.startswith("teacher")}
        model = build_on_meta(cls, config)
        load_strict(model, sd, what=str(path), assign=True)
        model.materialize_buffers()
        return model.float().eval().requires_grad_(False)

    def materialize_buffers(self) -> None:
        """Recreate the non-persistent buffers (absent from checkpoints, left on meta by `build_on_meta`)."""
        emb = self.encoder.embeddings
        emb.position_ids = torch.arange(emb.num_positions, device=emb.position_embedding.weight.device)[None]
        left = [name for name, b in self.named_buffers() if b.is_meta]
        if left:
            raise RuntimeError(f"buffers still on the meta device: {left}")

    # ------------------------------------------------------------------------------------------------------ encoding
    def normalize(self, pixels01: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> [-1,1] (upstream's ScalingLayer)."""
        if pixels01.ndim != 4 or pixels01.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(pixels01.shape)}")
        # Run in the model's dtype/device, as upstream's callers cast the input (`x.to(encoder.dtype)`).
        return self.scale_layer(pixels01.to(self.scale_layer.shift))

    def resize(self, x: torch.Tensor, antialias: bool | None = None) -> torch.Tensor:
        """Squash to input_size x input_size when the size differs (torchvision `Resize` = bilinear interpolate)."""
        size = self.config.input_size
        if tuple(x.shape[-2:]) == (size, size):
            return x
        aa = self.antialias if antialias is None else antialias
        # In fp32: CPU has no half-precision antialiased kernel (a no-op for fp32 models).
        out = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=aa)
        return out.to(x.dtype)

    def encoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher hidden_states[select_layer_id] for normalised input x; later layers, post-LN, head are skipped."""
        h = self.encoder.embeddings(x.to(self.encoder.embeddings.patch_embedding.weight.dtype))
        for layer in self.encoder.encoder.layers[: self.config.encoder_layers_used]:
            h = layer(h, None)
        return h

    @staticmethod
    def avg_pool(z: torch.Tensor, pool_scale: int) -> torch.Tensor:
        """avg_pool2d(k = stride = s) on the square token grid, floor (s=2 on 27x27 drops the last row/col)."""
        b, n, c = z.shape
        p = _grid_side(n)
        grid = z.transpose(1, 2).reshape(b, c, p, p)
        pooled = F.avg_pool2d(grid, kernel_size=pool_scale, stride=pool_scale)
        return pooled.flatten(2).transpose(1, 2).contiguous()

    def encode_features(self, pixels01: torch.Tensor, pool_scale: int | None = None, deterministic: bool = True,
                        generator: Generators = None, antialias: bool | None = None) -> dict[str, torch.Tensor]:
        """The whole encode path, every intermediate: pixel_normalized, pixel_input, encoder_features, vq_feats,
        projected_z, unregularized_z, codebook, cos_sim / probs (stochastic SimVQ), quantized, encoded, indices."""
        x = self.normalize(pixels01)
        out = {"pixel_normalized": x}
        x_in = self.resize(x, antialias)
        out["pixel_input"] = x_in
        feats = self.encoder_features(x_in)
        out["encoder_features"] = feats
        s = self.pool_scale if pool_scale is None else pool_scale
        if s != 1:
            feats = self.avg_pool(feats, s)
        out["vq_feats"] = self.encode_task_layer(feats.to(x.dtype))
        out.update(self.bottleneck(out["vq_feats"], deterministic=deterministic, generator=generator))
        return out

    def encode(self, pixels01: torch.Tensor, pool_scale: int | None = None, deterministic: bool = True,
               generator: Generators = None, return_features: bool = False,
               antialias: bool | None = None) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Images (B, 3, H, W) in [0, 1] -> ids (B, N) int64, N = (grid // pool_scale)^2.

        `deterministic=False` samples each token from softmax(cos / T) with `generator` (one generator: one draw
        over all B*N tokens, upstream's order; a list of B generators: per image). `pool_scale=None` uses the
        model's `pool_scale` (from the checkpoint args). With `return_features`, also the dict of intermediates.
        """
        out = self.encode_features(pixels01, pool_scale, deterministic, generator, antialias)
        return (out["indices"], out) if return_features else out["indices"]

    # ------------------------------------------------------------------------------------------------------ decoding
    def decode(self, encoded: torch.Tensor) -> torch.Tensor:
        """Bottleneck outputs (B, N, D) -> SigLIP-width features (B, N, hidden) (upstream `decode`)."""
        return self.decode_task_layer(self.decoder(encoded))

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, N) -> out_linear(l2norm(code)) (B, N, D), the decoder input of the text-to-image path."""
        return self.bottleneck.decode(ids)

    def decode_from_indices(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, N) on a square grid (729 / 169 / 81 at full size) -> features (B, N, hidden)
        (upstream `decode_from_bottleneck`: what AR-DTok is conditioned on in text-to-image)."""
        if ids.ndim != 2:
            raise ValueError(f"expected ids (B, N), got {tuple(ids.shape)}")
        return self.decode(self.lookup(ids))

    def rec(self, pixels01: torch.Tensor, pool_scale: int | None = None, deterministic: bool = True,
            generator: Generators = None, antialias: bool | None = None) -> torch.Tensor:
        """Images -> decode(encode): upstream `input_type='rec'`, the AR-DTok condition for reconstruction."""
        out = self.encode_features(pixels01, pool_scale, deterministic, generator, antialias)
        return self.decode(out["encoded"])

    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors as matched (l2-normalised in the released model)."""
        return self.bottleneck.regularizer.codebook()

    @property
    def num_tokens(self) -> int:
        """Tokens per image at pool_scale 1 (729 at full size)."""
        return (self.config.input_size // self._patch_size) ** 2

    @property
    def _patch_size(self) -> int:
        return int(self.encoder.config.patch_size)
