"""TA-Tok configuration: the checkpoint's constructor `args` plus the teacher (SigLIP) vision config.

The released `ta_tok.pth` stores ``{"model": {"args": {...}, "sd": {...}}}``; `args` are the keyword arguments of
upstream's `TextAlignedTokenizer` (csuhan/Tar 47da8e1), with the bottleneck and its SimVQ regularizer nested as
``{"name": ..., "args": {...}}`` specs. The teacher architecture is not in the file: upstream reads it with
`AutoConfig.from_pretrained(args["teacher"])`, which here is either a folder next to the checkpoint, an explicit
config, or (for the released hub id) a built-in copy, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tok.checkpoint import CheckpointError, read_json_file

SO400M_TEACHER = "google/siglip2-so400m-patch14-384"
# Vision tower of google/siglip2-so400m-patch14-384 (a FixRes SigLIP2 checkpoint, stored as SigLIP v1 "siglip").
# Checked against full_size_params.json (428,225,600 params incl. head) in tests/test_tatok.py.
SO400M_VISION_CONFIG: dict[str, Any] = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 384,
    "num_channels": 3,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}
BUILTIN_TEACHERS: dict[str, dict[str, Any]] = {SO400M_TEACHER: SO400M_VISION_CONFIG}

# The decoder is `Siglip2VisionConfig()` defaults (transformers 4.50, what upstream ran) updated with
# patch 1 / depth / channels D / encoder width. The defaults are pinned here so that a changed library default
# cannot silently change the architecture.
DECODER_FIXED: dict[str, Any] = {
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_patches": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "vision_use_head": True,
    "patch_size": 1,
}

# Args a checkpoint may hold that change nothing here, and why (anything else unknown is refused).
IGNORED_ARGS: dict[str, str] = {
    "input_type": "selects what upstream's forward() returns; this port has one method per output",
    "bottleneck.args.token_nums": "overwritten by upstream with bottleneck_token_num; unused by SimVQ",
    "bottleneck.args.input_dim": "overwritten by upstream with the teacher width",
    "bottleneck.args.output_dim": "overwritten by upstream with bottleneck_dim",
    "bottleneck.args.regularizer.args.dim": "overwritten by upstream with bottleneck_dim",
    "bottleneck.args.regularizer.args.token_nums": "overwritten by upstream; unused by SimVQ",
    "bottleneck.args.regularizer.args.same_index_shape": "only reshapes indices; ids are always returned (B, N)",
}
_TOP_ARGS = ("bottleneck", "bottleneck_token_num", "input_size", "teacher", "pool_scale", "decoder_depth",
             "select_layer_id")
_BOTTLENECK_ARGS = ("bottleneck_dim", "regularizer")
_SIMVQ_ARGS = ("codebook_size", "l2_normalized", "stochastic", "stochastic_temperature")


@dataclass(frozen=True)
class TATokConfig:
    """Everything that shapes a TA-Tok model. Defaults are upstream's constructor defaults.

    `vision` holds the teacher's `SiglipVisionConfig` keyword arguments. `antialias` (resize of non-`input_size`
    inputs) and `attn_implementation` are run-time choices, not checkpoint args.
    """

    bottleneck_dim: int
    codebook_size: int
    vision: Mapping[str, Any] = field(default_factory=lambda: dict(SO400M_VISION_CONFIG))
    l2_normalized: bool = False
    stochastic: bool = False
    stochastic_temperature: float = 1.0
    bottleneck_token_num: int = 256
    input_size: int = 384
    teacher: str = SO400M_TEACHER
    pool_scale: int = 1
    decoder_depth: int = 3
    select_layer_id: int = -2
    # torchvision >= 0.17 default for tensors; upstream pinned 0.16.2, where it was effectively False.
    antialias: bool = True
    attn_implementation: str = "sdpa"
    ignored_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bottleneck_dim <= 0:
            raise ValueError(f"bottleneck_dim must be > 0 (got {self.bottleneck_dim}); the identity bottleneck of "
                             "upstream (bottleneck_dim <= 0) is not supported")
        if self.codebook_size <= 0:
            raise ValueError(f"codebook_size must be > 0 (got {self.codebook_size})")
        if self.stochastic and not self.l2_normalized:
            raise ValueError("stochastic SimVQ sampling requires l2_normalized=True (upstream asserts this)")
        if self.pool_scale < 1 or self.decoder_depth < 1:
            raise ValueError(f"pool_scale and decoder_depth must be >= 1 (got {self.pool_scale}, "
                             f"{self.decoder_depth})")
        missing = [k for k in ("hidden_size", "num_hidden_layers") if k not in self.vision]
        if missing:
            raise ValueError(f"teacher vision config lacks {', '.join(missing)}")
        layers = self.vision["num_hidden_layers"]
        if not -(layers + 1) <= self.select_layer_id <= layers:
            raise ValueError(f"select_layer_id {self.select_layer_id} outside hidden_states of a {layers}-layer "
                             "teacher")
        if self.encoder_hidden_size % DECODER_FIXED["num_attention_heads"]:
            raise ValueError(f"teacher width {self.encoder_hidden_size} is not divisible by the decoder's 12 heads")

    @property
    def encoder_hidden_size(self) -> int:
        return int(self.vision["hidden_size"])

    @property
    def encoder_layers_used(self) -> int:
        """How many teacher layers `encode` runs: hidden_states[select_layer_id] is the output of that many."""
        return self.select_layer_id % (int(self.vision["num_hidden_layers"]) + 1)

    @property
    def learned_temperature(self) -> bool:
        """Upstream: a fixed 1/T when T > 0, else a learned scalar `stochastic_temperature_inv` (init 10)."""
        return self.stochastic and self.stochastic_temperature <= 0

    def decoder_config_kwargs(self) -> dict[str, Any]:
        return {**DECODER_FIXED, "num_hidden_layers": self.decoder_depth, "num_channels": self.bottleneck_dim,
                "hidden_size": self.encoder_hidden_size}

    @classmethod
    def from_args(cls, args: Mapping[str, Any], vision: Mapping[str, Any], *, source: str = "checkpoint",
                  antialias: bool = True, attn_implementation: str = "sdpa") -> TATokConfig:
        """Build from a checkpoint's ``["model"]["args"]``; CheckpointError names missing or unknown args."""
        if not isinstance(args, Mapping):
            raise CheckpointError(f"{source}: ['model']['args'] is {type(args).__name__}, expected a dict")
        missing: list[str] = []
        unknown: list[str] = []
        ignored: list[str] = []

        def spec(node: Any, where: str, name: str) -> Mapping[str, Any] | None:
            """The args of a ``{"name": ..., "args": {...}}`` spec; None (reported missing) when absent."""
            if not isinstance(node, Mapping):
                missing.append(where)
                return None
            if node.get("name") != name:
                raise CheckpointError(f"{source}: args {where}.name is {node.get('name')!r}; only {name!r} is "
                                      "supported (TA-Tok 47da8e1)")
            if not isinstance(node.get("args"), Mapping):
                missing.append(f"{where}.args")
                return None
            unknown.extend(f"{where}.{k}" for k in node if k not in ("name", "args"))
            return node["args"]

        def sort(node: Mapping[str, Any], where: str, known: tuple[str, ...], required: tuple[str, ...]) -> None:
            missing.extend(f"{where}{k}" for k in required if k not in node)
            for key in node:
                if key not in known:
                    (ignored if f"{where}{key}" in IGNORED_ARGS else unknown).append(f"{where}{key}")

        sort(args, "", _TOP_ARGS, ())
        b_args = spec(args.get("bottleneck"), "bottleneck", "bottleneck")
        r_args: Mapping[str, Any] | None = None
        if b_args is not None:
            sort(b_args, "bottleneck.args.", _BOTTLENECK_ARGS, ("bottleneck_dim",))
            r_args = spec(b_args.get("regularizer"), "bottleneck.args.regularizer", "simvq")
        if r_args is not None:
            sort(r_args, "bottleneck.args.regularizer.args.", _SIMVQ_ARGS, ("codebook_size",))
        if missing or unknown:
            parts = [f"missing required args: {', '.join(missing)}"] if missing else []
            if unknown:
                parts.append(f"unknown args: {', '.join(unknown)} (known-harmless ones: {', '.join(IGNORED_ARGS)})")
            raise CheckpointError(f"{source}: TA-Tok args do not fit upstream's TextAlignedTokenizer: "
                                  + "; ".join(parts))
        assert b_args is not None and r_args is not None  # both reported missing above otherwise
        values = {k: args[k] for k in _TOP_ARGS if k in args and k != "bottleneck"}
        values.update({k: r_args[k] for k in _SIMVQ_ARGS if k in r_args})
        try:
            return cls(bottleneck_dim=int(b_args["bottleneck_dim"]), vision=dict(vision), ignored_args=tuple(ignored),
                       antialias=antialias, attn_implementation=attn_implementation, **values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: TA-Tok args are not usable: {exc}") from exc


def _vision_from_mapping(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The vision part of a full SiglipConfig dict (``vision_config``) or a bare vision config."""
    model_type = cfg.get("model_type")
    if "vision_config" in cfg:
        if model_type not in (None, "siglip"):
            raise ValueError(f"{where}: teacher model_type {model_type!r}; TA-Tok's encoder call works only for a "
                             "SigLIP v1 ('siglip') vision tower (FixRes SigLIP2 checkpoints are stored as 'siglip')")
        vision = dict(cfg["vision_config"])
    else:
        if model_type not in (None, "siglip_vision_model"):
            raise ValueError(f"{where}: expected a SigLIP config with vision_config, or a bare siglip_vision_model "
                             f"config; got model_type {model_type!r}")
        vision = dict(cfg)
    vision.pop("transformers_version", None)
    if "hidden_size" not in vision or "num_hidden_layers" not in vision:
        raise ValueError(f"{where}: vision config lacks hidden_size / num_hidden_layers")
    return vision


def resolve_teacher_vision(teacher_config: str | Path | Mapping[str, Any] | None, teacher: str,
                           checkpoint_dir: Path) -> dict[str, Any]:
    """The teacher's SiglipVisionConfig kwargs.

    `teacher_config`: a config.json path (or a folder holding one), or a dict; a full SiglipConfig (with
    ``vision_config``) or a bare vision config. When None: the folder ``checkpoint_dir / teacher`` if it exists
    (how upstream resolves a relative `teacher`), else the built-in config of a known hub id.
    """
    if isinstance(teacher_config, Mapping):
        return _vision_from_mapping(teacher_config, "teacher_config")
    if teacher_config is None:
        local = checkpoint_dir / teacher
        if (local / "config.json").is_file():
            teacher_config = local
        elif teacher in BUILTIN_TEACHERS:
            return dict(BUILTIN_TEACHERS[teacher])
        else:
            raise FileNotFoundError(f"teacher {teacher!r}: no {local / 'config.json'} and not a built-in teacher "
                                    f"({', '.join(BUILTIN_TEACHERS)}); pass teacher_config=")
    path = Path(teacher_config)
    if path.is_dir():
        path = path / "config.json"
    return _vision_from_mapping(read_json_file(path), str(path))  # a broken file is a CheckpointError
