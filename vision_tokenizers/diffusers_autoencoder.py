"""Any diffusers image autoencoder as a tokenizer, from its folder's ``config.json`` alone.

``diffusers:<hub repo id or local folder>[#<subfolder>]`` (``diffusers:stabilityai/sdxl-vae``,
``diffusers:black-forest-labs/FLUX.1-dev#vae``, ``diffusers:./my_vae``) names a folder in diffusers' layout
(``config.json`` + ``diffusion_pytorch_model.safetensors``). Its ``_class_name`` picks how the model is run:

- KL autoencoders (``AutoencoderKL``, ``AutoencoderKLFlux2``): latents are the posterior MODE (a sample would make runs
  irreproducible); video VAEs (``AutoencoderKLQwenImage``, ``AutoencoderKLWan``) run one image as a one-frame video.
- ``AutoencoderDC`` and ``AutoencoderTiny``: their deterministic latents.
- ``VQModel``: integer ids of its codebook; decoding looks the ids up and runs the decoder.

Every supported class reads and writes pixels in [-1, 1] (diffusers' ``AutoencoderTiny`` maps to TAESD's own [0, 1]
inside its encoder and back inside its decoder). Scaling / shift factors belong to the diffusion model's latent space,
not to the round trip, and are never applied. Latents are returned in float32 (32 bits per token).

The spec of such a name is derived from the config (`spec_from_config`): token shape ``(channels, R/f, R/f)`` (ids
``(R/f, R/f)``) at resolution R (default 256), f the class's spatial downsampling. `NAMED_SPECS` are released
autoencoders written out the same way, with their hub files; `build` checks the released config against them.
Weights load strictly through `tok.diffusers_io` (built on meta, every key and shape checked): a missing or
mismatching file is a `CheckpointError`, i.e. a skip, never silently re-initialised weights.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any

import torch

from tok.checkpoint import CheckpointError
from vision_tokenizers.base import BaseTokenizer
from vision_tokenizers.spec import TokenizerSpec, WeightFile

FAMILY = "diffusers"
PREFIX = "diffusers:"
DEFAULT_RESOLUTION = 256
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PIXEL_RANGE = (-1.0, 1.0)
LATENT_BITS = 32  # latents are handed out as float32

KL_CLASSES = ("AutoencoderKL", "AutoencoderKLFlux2")
FRAME_CLASSES = ("AutoencoderKLQwenImage", "AutoencoderKLWan")
SUPPORTED_CLASSES = (*KL_CLASSES, *FRAME_CLASSES, "AutoencoderDC", "AutoencoderTiny", "VQModel")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ------------------------------------------------------------------------------------------------- names
def parse_name(name: str) -> tuple[str, str | None]:
    """``diffusers:<repo or folder>[#<subfolder>]`` -> (repo id or folder, subfolder or None)."""
    if not name.startswith(PREFIX):
        raise ValueError(f"{name!r}: a diffusers autoencoder is named '{PREFIX}<hub repo id or folder>[#subfolder]'")
    where, _, subfolder = name[len(PREFIX):].partition("#")
    subfolder = subfolder.strip().strip("/") or None
    if not where.strip():
        raise ValueError(f"{name!r}: no hub repo id or folder after '{PREFIX}'")
    if subfolder and (Path(subfolder).is_absolute() or ".." in Path(subfolder).parts):
        raise ValueError(f"{name!r}: the subfolder must be a relative path inside the folder, got {subfolder!r}")
    return where.strip(), subfolder


def is_local(where: str) -> bool:
    """A local folder: the path exists, or it is written as one (./ ../ / ~)."""
    return where.startswith(("./", "../", "/", "~", ".\\", "..\\")) or where in (".", "..") or \
        Path(where).expanduser().exists()


def _in_subfolder(filename: str, subfolder: str | None) -> str:
    return f"{subfolder}/{filename}" if subfolder else filename


def weight_files(local_dir: str, subfolder: str | None = None, repo_id: str | None = None,
                 gated: bool = False, weights: tuple[str, ...] = (WEIGHTS_NAME,)) -> tuple[WeightFile, ...]:
    """config.json + the weights, in `subfolder`, found under ``<weights dir>/<local_dir>/`` or on the hub."""
    return tuple(WeightFile(_in_subfolder(f, subfolder), local_dir=local_dir, repo_id=repo_id, gated=gated)
                 for f in (CONFIG_NAME, *weights))


def _local_weight_names(folder: Path) -> tuple[str, ...]:
    """The weight files a local folder holds: one safetensors file, a sharded index with its shards, or a .bin."""
    if (folder / WEIGHTS_NAME).is_file():
        return (WEIGHTS_NAME,)
    index = folder / f"{WEIGHTS_NAME}.index.json"
    if index.is_file():
        from tok.diffusers_io import read_json

        try:
            shards = read_json(index).get("weight_map", {})
        except CheckpointError:  # unreadable: loading it will say so, as a weights problem
            shards = {}
        return (index.name, *sorted(set(shards.values()) if isinstance(shards, dict) else ()))
    legacy = folder / "diffusion_pytorch_model.bin"
    return (legacy.name,) if legacy.is_file() else (WEIGHTS_NAME,)


def _files_for(where: str, subfolder: str | None) -> tuple[WeightFile, ...]:
    if is_local(where):
        folder = Path(where).expanduser().resolve()
        # An absolute local_dir: `<weights dir>/<local_dir>/<file>` is that folder whatever the weights dir.
        return weight_files(str(folder), subfolder, weights=_local_weight_names(folder / (subfolder or "")))
    if not _HUB_ID.match(where):
        raise ValueError(f"{PREFIX}{where}: not an existing folder and not a hub repo id ('owner/name'); write a "
                         "local folder as ./path or /path")
    return weight_files(where, subfolder, repo_id=where, gated=where in _GATED_REPOS)


# ------------------------------------------------------------------------------------------------- specs
def _class_default(class_name: str, key: str) -> Any:
    """The value diffusers uses for a config key the file leaves out (the class's __init__ default)."""
    import diffusers

    parameter = inspect.signature(getattr(diffusers, class_name).__init__).parameters.get(key)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise KeyError(key)
    return parameter.default


def _value(class_name: str, config: dict[str, Any], key: str) -> Any:
    return config[key] if key in config else _class_default(class_name, key)


def geometry(class_name: str, config: dict[str, Any]) -> tuple[int, int, int]:
    """(latent channels, spatial downsampling factor, image channels) of an autoencoder config, as diffusers
    computes them for that class."""
    get = lambda key: _value(class_name, config, key)  # noqa: E731
    if class_name in (*KL_CLASSES, "VQModel"):
        return get("latent_channels"), 2 ** (len(get("block_out_channels")) - 1), get("in_channels")
    if class_name in ("AutoencoderDC", "AutoencoderTiny"):
        return get("latent_channels"), 2 ** (len(get("encoder_block_out_channels")) - 1), get("in_channels")
    if class_name == "AutoencoderKLQwenImage":
        return get("z_dim"), 2 ** len(get("temperal_downsample")), get("input_channels")
    if class_name == "AutoencoderKLWan":  # patchified input: the encoder sees in_channels = 3 * patch**2
        patch = get("patch_size") or 1
        return get("z_dim"), get("scale_factor_spatial"), get("in_channels") // (patch * patch)
    raise ValueError(f"{class_name!r} is not an image autoencoder this family runs; supported: "
                     f"{', '.join(SUPPORTED_CLASSES)}")


def spec_from_config(name: str, config: dict[str, Any], resolution: int, weights: tuple[WeightFile, ...] = (),
                     **extra: Any) -> TokenizerSpec:
    """The spec of the autoencoder `config` describes, at `resolution`; `extra` are further TokenizerSpec fields
    (description, published, tiny...)."""
    class_name = config.get("_class_name")
    if class_name not in SUPPORTED_CLASSES:
        raise ValueError(f"{name}: config.json describes {class_name!r}, which is not an image autoencoder; "
                         f"supported classes: {', '.join(SUPPORTED_CLASSES)}")
    channels, factor, image_channels = geometry(class_name, config)
    if image_channels != 3:
        raise ValueError(f"{name}: {class_name} reads {image_channels}-channel images; only RGB autoencoders are "
                         "supported")
    if resolution <= 0 or resolution % factor:
        raise ValueError(f"{name}: resolution {resolution} is not a multiple of the {class_name}'s spatial "
                         f"downsampling factor {factor}")
    side = resolution // factor
    config_file = next((w.filename for w in weights if w.filename.rsplit("/", 1)[-1] == CONFIG_NAME), CONFIG_NAME)
    facts = {"class_name": class_name, "config_file": config_file, "latent_channels": channels, "downsample": factor}
    extra.setdefault("description", describe(class_name, config))
    extra.setdefault("resolution_step", factor)  # convolutional: --resolution may be any multiple of the factor
    if class_name == "VQModel":
        codebook = int(_value(class_name, config, "num_vq_embeddings"))
        return TokenizerSpec(name=name, family=FAMILY, resolution=resolution, kind="discrete", token_shape=(side, side),
                             bits_per_token=math.log2(codebook), codebook_size=codebook, weights=tuple(weights),
                             config={**facts, "codebook_size": codebook}, pixel_range=PIXEL_RANGE, **extra)
    return TokenizerSpec(name=name, family=FAMILY, resolution=resolution, kind="continuous",
                         token_shape=(channels, side, side), bits_per_token=LATENT_BITS, weights=tuple(weights),
                         config=facts, pixel_range=PIXEL_RANGE, **extra)


def describe(class_name: str, config: dict[str, Any], what: str = "", origin: str = "") -> str:
    """One line for reports: what it is, its class and geometry, where from, what its tokens are."""
    channels, factor, _ = geometry(class_name, config)
    where = f"; {origin}" if origin else ""
    tokens = "ids of its codebook" if class_name == "VQModel" else _LATENT_TEXT[class_name]
    return f"{what + ' ' if what else ''}({class_name}, f{factor}, {channels} latent channels{where}), {tokens}"


_LATENT_TEXT = {**dict.fromkeys(KL_CLASSES, "posterior mode, fp32 latents"),
                **dict.fromkeys(FRAME_CLASSES, "video VAE on one frame, posterior mode, fp32 latents"),
                "AutoencoderDC": "fp32 latents", "AutoencoderTiny": "fp32 latents"}


def _read_config(spec: TokenizerSpec, weights_dir: str | Path | None, offline: bool | None) -> dict[str, Any]:
    """The folder's config.json, through the usual weight resolution (weights dir, hub cache, download)."""
    from tok.diffusers_io import read_json
    from vision_tokenizers.weights import WeightsUnavailable, resolve_weights

    files = resolve_weights(spec, weights_dir, offline)
    path = next(iter(files.values()))
    try:
        return read_json(path)
    except CheckpointError as exc:
        raise WeightsUnavailable(f"weights for {spec.name} unreadable ({exc.one_line()}); delete {path} to download "
                                 "it again, or replace it with the released file") from exc


def spec_for_name(name: str, resolution: int | None = None, weights_dir: str | Path | None = None,
                  offline: bool | None = None) -> TokenizerSpec:
    """The spec of ``diffusers:<repo or folder>[#<subfolder>]``, read from its config.json.

    Raises ValueError for a malformed name, a config that is not an image autoencoder or a resolution the model
    cannot take; `WeightsUnavailable` (one line, how to get the file) when config.json cannot be had or read."""
    where, subfolder = parse_name(name)
    files = _files_for(where, subfolder)
    resolution = DEFAULT_RESOLUTION if resolution is None else int(resolution)
    probe = TokenizerSpec(name=name, family=FAMILY, resolution=resolution, kind="continuous", token_shape=(),
                          bits_per_token=LATENT_BITS, weights=files[:1])
    config = _read_config(probe, weights_dir, offline)
    origin = f"{where}#{subfolder}" if subfolder else where
    extra = {"description": describe(config["_class_name"], config, origin=origin)} \
        if config.get("_class_name") in SUPPORTED_CLASSES else {}
    return spec_from_config(name, config, resolution, files, **extra)


# ------------------------------------------------------------------------------------------------- tokenizers
class _Autoencoder(BaseTokenizer):
    """A diffusers autoencoder behind the tokenizer interface; pixels in [-1, 1] (spec.pixel_range)."""

    def __init__(self, spec: TokenizerSpec, model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        # nn.Module.to, not diffusers' override (which warns about fp32-kept modules even when there are none); the
        # loader already cast every module to `dtype`, as upstream's `model.to(dtype)` does.
        self.model = torch.nn.Module.to(model, device=self.device, dtype=dtype).eval().requires_grad_(False)


class KLAutoencoder(_Autoencoder):
    """AutoencoderKL and variants: latents are the posterior mode."""

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode(pixels).latent_dist.mode().float()

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decode(tokens.to(self.dtype)).sample


class FrameAutoencoder(_Autoencoder):
    """A video VAE run on single images: (B,C,H,W) <-> a one-frame video (B,C,1,H,W)."""

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0].float()

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decode(tokens.to(self.dtype).unsqueeze(2)).sample[:, :, 0]


class DCAutoencoder(_Autoencoder):
    """AutoencoderDC: deterministic latents."""

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode(pixels).latent.float()

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decode(tokens.to(self.dtype)).sample


class TinyAutoencoder(_Autoencoder):
    """AutoencoderTiny (TAESD family) through diffusers' wrapper, which takes and gives [-1, 1]."""

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode(pixels).latents.float()

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decode(tokens.to(self.dtype)).sample


class VQAutoencoder(_Autoencoder):
    """VQModel: encode -> nearest codebook entry -> ids (B, h, w); decode: ids -> codebook entries -> decoder."""

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        latents = self.model.encode(pixels).latents
        _, _, (_, _, ids) = self.model.quantize(latents)
        return ids.reshape(latents.shape[0], *latents.shape[2:])

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.long()
        shape = (*ids.shape, self.model.quantize.vq_embed_dim)  # (B, h, w, D), as get_codebook_entry expects
        if self.model.config.lookup_from_codebook:  # diffusers' own id path (aMUSEd)
            return self.model.decode(ids.flatten(), force_not_quantize=True, shape=shape).sample
        entries = self.model.quantize.get_codebook_entry(ids.flatten(), shape)
        return self.model.decode(entries, force_not_quantize=True).sample


TOKENIZERS: dict[str, type[_Autoencoder]] = {
    **dict.fromkeys(KL_CLASSES, KLAutoencoder), **dict.fromkeys(FRAME_CLASSES, FrameAutoencoder),
    "AutoencoderDC": DCAutoencoder, "AutoencoderTiny": TinyAutoencoder, "VQModel": VQAutoencoder,
}


def _released_folder(spec: TokenizerSpec, files: dict[str, Path]) -> Path:
    """The folder holding config.json and the weights side by side (a release folder or a hub snapshot)."""
    folder = files[spec.config["config_file"]].parent
    apart = sorted(str(p) for p in files.values() if p.parent != folder)
    if apart:
        raise CheckpointError(f"{spec.name}: config.json is in {folder} but {', '.join(apart)} is elsewhere; put the "
                              "release's files into one folder")
    return folder


def _check_geometry(spec: TokenizerSpec, folder: Path) -> None:
    """A spec written out statically must describe the files it loads: same class, channels and downsampling."""
    from tok.diffusers_io import read_json

    config = read_json(folder / CONFIG_NAME)
    expected = (spec.config["class_name"], spec.config["latent_channels"], spec.config["downsample"])
    class_name = config.get("_class_name")
    found = (class_name, *geometry(class_name, config)[:2]) if class_name in SUPPORTED_CLASSES else (class_name,)
    if found != expected:
        raise CheckpointError(f"{folder / CONFIG_NAME}: describes (class, latent channels, downsampling) {found}, "
                              f"{spec.name} expects {expected}; is this the released folder?")


def build(spec: TokenizerSpec, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> _Autoencoder:
    """The tokenizer of `spec` from its resolved files (strict load; file problems are CheckpointError)."""
    import diffusers

    from tok.diffusers_io import load_diffusers_model

    folder = _released_folder(spec, files)
    _check_geometry(spec, folder)
    class_name = spec.config["class_name"]
    model = load_diffusers_model(getattr(diffusers, class_name), folder, torch_dtype=dtype)
    return TOKENIZERS[class_name](spec, model, device, dtype)


# ------------------------------------------------------------------------------------------------- released models
def _named(name: str, repo: str, resolution: int, config: dict[str, Any], what: str, *, subfolder: str | None = None,
           gated: bool = False, local_dir: str | None = None, published: dict[str, float] | None = None,
           source: str = "") -> TokenizerSpec:
    """A released autoencoder: its hub files and the config fields that fix its tokens, written out statically."""
    files = weight_files(local_dir or repo.rsplit("/", 1)[-1], subfolder, repo_id=repo, gated=gated)
    origin = f"{repo}#{subfolder}" if subfolder else repo
    description = describe(config["_class_name"], config, what, origin)
    if source:
        description += f"; published numbers: {source}"
    return spec_from_config(name, config, resolution, files, description=description, published=published)


_SD_KL = {"_class_name": "AutoencoderKL", "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
          "in_channels": 3}
_KL16 = {**_SD_KL, "latent_channels": 16}
_FLUX2 = {**_SD_KL, "_class_name": "AutoencoderKLFlux2", "latent_channels": 32}
_QWEN = {"_class_name": "AutoencoderKLQwenImage", "z_dim": 16, "base_dim": 96, "dim_mult": [1, 2, 4, 4],
         "temperal_downsample": [False, True, True], "input_channels": 3}
_DCAE_F32 = {"_class_name": "AutoencoderDC", "latent_channels": 32, "in_channels": 3,
             "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024]}
_DCAE_F64 = {**_DCAE_F32, "latent_channels": 128, "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024, 2048]}
_TINY = {"_class_name": "AutoencoderTiny", "latent_channels": 4, "encoder_block_out_channels": [64, 64, 64, 64],
         "in_channels": 3}
_AMUSED_VQ = {"_class_name": "VQModel", "latent_channels": 64, "num_vq_embeddings": 8192, "in_channels": 3,
              "block_out_channels": [128, 256, 256, 512, 768]}
_SD_VAE_CARD = "COCO 2017 val, 5000 images at 256x256 (stabilityai/sd-vae-ft-mse-original model card)"

NAMED_SPECS: tuple[TokenizerSpec, ...] = (
    _named("sdxl_vae_512", "stabilityai/sdxl-vae", 512, _SD_KL, "SDXL VAE"),
    _named("sdxl_vae_256", "stabilityai/sdxl-vae", 256, _SD_KL, "SDXL VAE",
           published={"fid": 4.42, "psnr": 24.7, "ssim": 0.73},
           source="COCO 2017 val, 5000 images at 256x256 (stabilityai/sdxl-vae model card)"),
    _named("sd_vae_ema_512", "stabilityai/sd-vae-ft-ema", 512, _SD_KL, "SD VAE ft-EMA"),
    _named("sd_vae_ema_256", "stabilityai/sd-vae-ft-ema", 256, _SD_KL, "SD VAE ft-EMA",
           published={"fid": 4.42, "psnr": 23.8, "ssim": 0.69}, source=_SD_VAE_CARD),
    _named("sd_vae_mse_256", "stabilityai/sd-vae-ft-mse", 256, _SD_KL, "SD VAE ft-MSE",
           published={"fid": 4.70, "psnr": 24.5, "ssim": 0.71}, source=_SD_VAE_CARD),
    _named("sd35_vae_512", "stabilityai/stable-diffusion-3.5-large", 512, _KL16, "Stable Diffusion 3.5 VAE",
           subfolder="vae", gated=True),
    _named("flux1_vae_512", "black-forest-labs/FLUX.1-dev", 512, _KL16, "FLUX.1 VAE", subfolder="vae", gated=True),
    _named("flux2_vae_512", "black-forest-labs/FLUX.2-dev", 512, _FLUX2, "FLUX.2 VAE", subfolder="vae", gated=True),
    _named("qwenimage_vae_512", "Qwen/Qwen-Image", 512, _QWEN, "Qwen-Image VAE (Wan-style video VAE)",
           subfolder="vae"),
    _named("dcae_f32c32_512", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers", 512, _DCAE_F32,
           "DC-AE f32c32 (SANA 1.1)"),
    _named("dcae_f64c128_512", "mit-han-lab/dc-ae-f64c128-in-1.0-diffusers", 512, _DCAE_F64,
           "DC-AE f64c128 (ImageNet)", published={"fid": 0.2168, "psnr": 26.15, "ssim": 0.7105, "lpips": 0.0802},
           source="ImageNet val at 512x512, 'expected results' of applications/dc_ae/eval_dc_ae_model.py for "
                  "dc-ae-f64c128-in-1.0 (mit-han-lab/efficientvit applications/dc_ae/README.md)"),
    _named("taesd_512", "madebyollin/taesd", 512, _TINY, "TAESD (tiny autoencoder, SD 1/2 latent space)"),
    _named("taesdxl_512", "madebyollin/taesdxl", 512, _TINY, "TAESDXL (tiny autoencoder, SDXL latent space)"),
    _named("taesd3_512", "madebyollin/taesd3", 512, {**_TINY, "latent_channels": 16},
           "TAESD3 (tiny autoencoder, SD3 latent space)"),
    _named("taef1_512", "madebyollin/taef1", 512, {**_TINY, "latent_channels": 16},
           "TAEF1 (tiny autoencoder, FLUX.1 latent space)"),
    _named("amused_vq_256", "amused/amused-256", 256, _AMUSED_VQ, "aMUSEd VQ-GAN", subfolder="vqvae"),
    _named("amused_vq_512", "amused/amused-512", 512, _AMUSED_VQ, "aMUSEd VQ-GAN", subfolder="vqvae"),
)

_GATED_REPOS = frozenset(w.repo_id for s in NAMED_SPECS for w in s.weights if w.gated)
