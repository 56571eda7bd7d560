"""Any diffusers autoencoder by folder (`diffusers:<folder>`) and the released ones by name, on tiny random models.

Every tiny model is written with diffusers' own `save_pretrained` (the released file layout) and must give exactly
what diffusers itself gives on the same crops: the posterior mode / latents / ids on encode, the decoder's image on
decode. The named tokenizers load tiny models of their own class and geometry from `<weights dir>/<local_dir>/
<subfolder>/`, the layout their hub files take.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import vision_tokenizers as vt
from tok.checkpoint import CheckpointError
from vision_tokenizers import diffusers_autoencoder as dae
from vision_tokenizers.weights import WeightsUnavailable, resolve_weights

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------- tiny models
def _dc_widths(channels: int, levels: int) -> tuple[int, ...]:
    """Stage widths ending at `channels`, each stage at most 4x the previous (DC-AE's space-to-channel shortcut)."""
    widths = [channels]
    while len(widths) < levels:
        widths.insert(0, max(8, widths[0] // 4))
    return tuple(widths)


def tiny_model(class_name: str, channels: int, factor: int, **extra) -> torch.nn.Module:
    """A random model of `class_name` with `channels` latent channels and spatial downsampling `factor`."""
    import diffusers

    levels = int(math.log2(factor)) + 1
    cls = getattr(diffusers, class_name)
    torch.manual_seed(0)
    if class_name in ("AutoencoderKL", "AutoencoderKLFlux2", "VQModel"):
        model = cls(block_out_channels=(8,) * levels, down_block_types=("DownEncoderBlock2D",) * levels,
                    up_block_types=("UpDecoderBlock2D",) * levels, latent_channels=channels, norm_num_groups=4,
                    layers_per_block=1, **extra)
    elif class_name == "AutoencoderTiny":
        model = cls(encoder_block_out_channels=(8,) * levels, decoder_block_out_channels=(8,) * levels,
                    num_encoder_blocks=(1,) * levels, num_decoder_blocks=(1,) * levels, latent_channels=channels)
    elif class_name == "AutoencoderDC":
        widths = _dc_widths(channels, levels)
        model = cls(latent_channels=channels, attention_head_dim=4,
                    encoder_block_types=("ResBlock",) * (levels - 1) + ("EfficientViTBlock",),
                    decoder_block_types=("ResBlock",) * (levels - 1) + ("EfficientViTBlock",),
                    encoder_block_out_channels=widths, decoder_block_out_channels=widths,
                    encoder_layers_per_block=(1,) * levels, decoder_layers_per_block=(1,) * levels,
                    encoder_qkv_multiscales=((),) * levels, decoder_qkv_multiscales=((),) * levels)
    elif class_name in ("AutoencoderKLQwenImage", "AutoencoderKLWan"):
        kwargs = {"scale_factor_spatial": factor} if class_name == "AutoencoderKLWan" else {}
        model = cls(base_dim=8, z_dim=channels, dim_mult=[1] * levels, num_res_blocks=1,
                    temperal_downsample=[False] + [True] * (levels - 2), **kwargs)
    else:
        raise AssertionError(class_name)
    with torch.no_grad():  # non-trivial statistics for the batch norms some of them carry
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return model.eval()


@torch.no_grad()
def reference_encode(model: torch.nn.Module, pixels01: torch.Tensor) -> torch.Tensor:
    """diffusers' own tokens for pixels in [0,1]: posterior mode, latents, or codebook ids."""
    x = pixels01 * 2 - 1
    name = type(model).__name__
    if name in dae.FRAME_CLASSES:
        return model.encode(x[:, :, None]).latent_dist.mode()[:, :, 0]
    if name in dae.KL_CLASSES:
        return model.encode(x).latent_dist.mode()
    if name == "AutoencoderDC":
        return model.encode(x).latent
    if name == "AutoencoderTiny":
        return model.encode(x).latents
    latents = model.encode(x).latents
    return model.quantize(latents)[2][2].reshape(latents.shape[0], *latents.shape[2:])


@torch.no_grad()
def reference_reconstruction(model: torch.nn.Module, pixels01: torch.Tensor) -> torch.Tensor:
    """diffusers' own encode -> decode, back in [0,1] (VQModel: its forward, which quantizes in `decode`)."""
    x = pixels01 * 2 - 1
    name = type(model).__name__
    if name == "VQModel":
        out = model.decode(model.encode(x).latents).sample
    elif name in dae.FRAME_CLASSES:
        out = model.decode(reference_encode(model, pixels01)[:, :, None]).sample[:, :, 0]
    else:
        out = model.decode(reference_encode(model, pixels01)).sample
    return ((out + 1) / 2).clamp(0, 1)


# (id, class, latent channels, factor, extra kwargs): every class the family runs
CASES = [
    ("kl", "AutoencoderKL", 4, 2, {}),
    ("flux2", "AutoencoderKLFlux2", 4, 2, {}),
    ("qwenimage", "AutoencoderKLQwenImage", 4, 4, {}),
    ("wan", "AutoencoderKLWan", 4, 4, {}),
    ("dc", "AutoencoderDC", 8, 4, {}),
    ("tiny", "AutoencoderTiny", 4, 2, {}),
    ("vq", "VQModel", 4, 2, {"num_vq_embeddings": 32}),
    ("vq_lookup", "VQModel", 4, 2, {"num_vq_embeddings": 32, "lookup_from_codebook": True}),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("diffusers_models")
    out = {}
    for case_id, class_name, channels, factor, extra in CASES:
        model = tiny_model(class_name, channels, factor, **extra)
        model.save_pretrained(root / case_id)
        out[case_id] = (root / case_id, model)
    return out


def _tokenizer(name: str, resolution: int = 32, weights_dir: Path | None = None) -> dae._Autoencoder:
    spec = dae.spec_for_name(name, resolution=resolution, weights_dir=weights_dir, offline=True)
    return dae.build(spec, resolve_weights(spec, weights_dir, offline=True), CPU, torch.float32)


# ------------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(("name", "expected"), [
    ("diffusers:stabilityai/sdxl-vae", ("stabilityai/sdxl-vae", None)),
    ("diffusers:black-forest-labs/FLUX.1-dev#vae", ("black-forest-labs/FLUX.1-dev", "vae")),
    ("diffusers:./my_vae", ("./my_vae", None)),
    ("diffusers:/abs/pipe#vae/", ("/abs/pipe", "vae")),
])
def test_parse_name(name, expected):
    assert dae.parse_name(name) == expected


@pytest.mark.parametrize("name", ["sdxl-vae", "diffusers:", "diffusers:#vae", "diffusers:org/repo#../x"])
def test_malformed_names_are_usage_errors(name):
    with pytest.raises(ValueError):
        dae.parse_name(name)


def test_local_folders_are_recognised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "repo").mkdir(parents=True)
    assert dae.is_local("./anything") and dae.is_local("/abs") and dae.is_local("~/x") and dae.is_local("org/repo")
    assert not dae.is_local("stabilityai/sdxl-vae")
    with pytest.raises(ValueError, match="hub repo id"):
        dae.spec_for_name("diffusers:not a repo id", offline=True)


# ------------------------------------------------------------------------------------------------- any folder
@pytest.mark.parametrize(("case_id", "class_name", "channels", "factor", "extra"), CASES, ids=[c[0] for c in CASES])
def test_folder_round_trip_matches_diffusers(folders, case_id, class_name, channels, factor, extra):
    folder, reference = folders[case_id]
    name = f"diffusers:{folder}"
    tok = _tokenizer(name)
    spec = tok.spec
    assert spec.name == name and spec.family == "diffusers" and spec.resolution == 32
    assert spec.pixel_range == (-1.0, 1.0)
    side = 32 // factor
    if class_name == "VQModel":
        assert spec.kind == "discrete" and spec.token_shape == (side, side)
        assert spec.codebook_size == extra["num_vq_embeddings"] and spec.bits_per_token == 5
    else:
        assert spec.kind == "continuous" and spec.token_shape == (channels, side, side) and spec.bits_per_token == 32

    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    tokens = tok.encode(x)
    assert tuple(tokens.shape[1:]) == spec.token_shape
    expected = reference_encode(reference, x)
    if class_name == "VQModel":
        assert tokens.dtype == torch.long and torch.equal(tokens, expected)
    else:
        assert tokens.dtype == torch.float32
        torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(tokens, tok.encode(x))  # deterministic: the mode, never a sample
    torch.testing.assert_close(tok.decode(tokens), reference_reconstruction(reference, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case_id", ["dc", "vq_lookup"])
def test_same_reconstruction_numbers_as_diffusers_on_the_same_crops(folders, case_id):
    import numpy as np
    from PIL import Image

    from vision_tokenizers.base import to_uint8
    from vision_tokenizers.metrics import psnr, ssim

    folder, reference = folders[case_id]
    tok = _tokenizer(f"diffusers:{folder}")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(2)]
    crops = tok.preprocess(images)  # the benchmark's centre crop at the spec's resolution
    ours = to_uint8(tok.reconstruct(crops))
    theirs = to_uint8(reference_reconstruction(reference, crops))
    ref = to_uint8(crops)
    torch.testing.assert_close(psnr(ref, ours), psnr(ref, theirs), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ssim(ref, ours), ssim(ref, theirs), rtol=1e-4, atol=1e-4)


def test_default_resolution_and_resolution_checks(folders):
    folder, _ = folders["qwenimage"]
    spec = dae.spec_for_name(f"diffusers:{folder}", offline=True)
    assert spec.resolution == 256 and spec.token_shape == (4, 64, 64)
    with pytest.raises(ValueError, match="multiple of"):
        dae.spec_for_name(f"diffusers:{folder}", resolution=30, offline=True)


def test_subfolder_of_a_pipeline_folder(tmp_path):
    model = tiny_model("AutoencoderKL", 4, 2)
    model.save_pretrained(tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "SomePipeline"}))
    tok = _tokenizer(f"diffusers:{tmp_path / 'pipe'}#vae")
    assert [w.filename for w in tok.spec.weights] == ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(tok.encode(x), reference_encode(model, x))


def test_relative_folder_name_is_kept_as_typed(folders, monkeypatch):
    folder, reference = folders["tiny"]
    monkeypatch.chdir(folder.parent)
    tok = _tokenizer(f"diffusers:./{folder.name}")
    assert tok.spec.name == f"diffusers:./{folder.name}"
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(tok.decode(tok.encode(x)), reference_reconstruction(reference, x))


def test_bf16_latents_are_float32(folders):
    folder, reference = folders["kl"]
    spec = dae.spec_for_name(f"diffusers:{folder}", resolution=32, offline=True)
    tok = dae.build(spec, resolve_weights(spec, offline=True), CPU, torch.bfloat16)
    x = torch.rand(1, 3, 32, 32)
    tokens = tok.encode(x)
    assert tokens.dtype == torch.float32
    torch.testing.assert_close(tokens, reference_encode(reference, x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("class_name", ["UNet2DConditionModel", "FluxTransformer2DModel", None])
def test_not_an_image_autoencoder_is_a_clear_usage_error(tmp_path, class_name):
    config = {"_class_name": class_name} if class_name else {"hidden_size": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{class_name!r}.*AutoencoderKL, AutoencoderKLFlux2"):
        dae.spec_for_name(f"diffusers:{tmp_path}", offline=True)


def test_missing_weights_are_unavailable_not_a_bug(folders, tmp_path):
    folder, _ = folders["kl"]
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    spec = dae.spec_for_name(f"diffusers:{tmp_path}", resolution=32, offline=True)  # config alone is enough here
    with pytest.raises(WeightsUnavailable, match="diffusion_pytorch_model.safetensors"):
        resolve_weights(spec, offline=True)
    with pytest.raises(WeightsUnavailable, match="config.json"):
        dae.spec_for_name(f"diffusers:{tmp_path / 'nothing_here'}", offline=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"_class_name": "Autoenc')
    with pytest.raises(WeightsUnavailable, match="unreadable"):
        dae.spec_for_name(f"diffusers:{tmp_path / 'broken'}", offline=True)


def test_unusable_weights_are_checkpoint_errors(folders, tmp_path):
    folder, _ = folders["kl"]
    for sub, payload in (("truncated", (folder / dae.WEIGHTS_NAME).read_bytes()[:1000]),
                         ("other_model", (folders["flux2"][0] / dae.WEIGHTS_NAME).read_bytes())):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_bytes((folder / "config.json").read_bytes())
        (tmp_path / sub / dae.WEIGHTS_NAME).write_bytes(payload)
        spec = dae.spec_for_name(f"diffusers:{tmp_path / sub}", resolution=32, offline=True)
        with pytest.raises(CheckpointError):
            dae.build(spec, resolve_weights(spec, offline=True), CPU, torch.float32)


def test_hub_names_resolve_like_any_weight(tmp_path):
    with pytest.raises(WeightsUnavailable, match=r"vae/config\.json.*hf://black-forest-labs/FLUX\.1-dev.*gated"):
        dae.spec_for_name("diffusers:black-forest-labs/FLUX.1-dev#vae", weights_dir=tmp_path, offline=True)
    model = tiny_model("AutoencoderKL", 4, 2)
    model.save_pretrained(tmp_path / "someone" / "my-vae")  # <weights dir>/<repo id>/ is looked at first
    tok = _tokenizer("diffusers:someone/my-vae", weights_dir=tmp_path)
    assert tok.spec.weights[0].repo_id == "someone/my-vae"
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(tok.encode(x), reference_encode(model, x))


def test_load_by_name_through_the_registry(folders):
    """The integration point: `vision_tokenizers.load("diffusers:<folder>")` and its skip path."""
    folder, reference = folders["dc"]
    tok = vt.load(f"diffusers:{folder}", offline=True, resolution=32)
    assert tok.spec.name == f"diffusers:{folder}"
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(tok.decode(tok.encode(x)), reference_reconstruction(reference, x),
                               rtol=1e-5, atol=1e-5)


def test_load_of_truncated_weights_is_a_skip(folders, tmp_path):
    folder, _ = folders["tiny"]
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    (tmp_path / dae.WEIGHTS_NAME).write_bytes((folder / dae.WEIGHTS_NAME).read_bytes()[:100])
    with pytest.raises(WeightsUnavailable, match="unreadable"):
        vt.load(f"diffusers:{tmp_path}", offline=True, resolution=32)


# ------------------------------------------------------------------------------------------------- released models
def test_named_specs_are_complete():
    names = [s.name for s in dae.NAMED_SPECS]
    assert len(names) == len(set(names)) >= 11
    for spec in dae.NAMED_SPECS:
        assert spec.family == "diffusers" and not spec.tiny and spec.description
        assert spec.name.endswith(f"_{spec.resolution}")
        config, weights = spec.weights
        assert config.repo_id and config.repo_id == weights.repo_id and config.gated == weights.gated
        assert config.filename.endswith("config.json") and weights.filename.endswith(dae.WEIGHTS_NAME)
        assert Path(config.filename).parent == Path(weights.filename).parent
        assert (spec.published is None) == ("published numbers:" not in spec.description)
    gated = {s.name for s in dae.NAMED_SPECS if s.weights[0].gated}
    assert gated == {"sd35_vae_512", "flux1_vae_512", "flux2_vae_512"}


def _geometry_key(spec) -> tuple[str, int, int]:
    return spec.config["class_name"], spec.config["latent_channels"], spec.config["downsample"]


@pytest.fixture(scope="module")
def released_layout(tmp_path_factory) -> tuple[Path, dict[tuple[str, int, int], torch.nn.Module]]:
    """One weights dir holding, for every named spec, a tiny model of its class and geometry in its hub layout."""
    root = tmp_path_factory.mktemp("weights")
    models: dict[tuple[str, int, int], torch.nn.Module] = {}
    for spec in dae.NAMED_SPECS:
        key = _geometry_key(spec)
        extra = {"num_vq_embeddings": spec.codebook_size, "lookup_from_codebook": True} if spec.codebook_size else {}
        model = models.setdefault(key, tiny_model(*key, **extra))
        folder = root / spec.weights[0].local_dir / Path(spec.weights[0].filename).parent
        if not (folder / "config.json").exists():
            model.save_pretrained(folder)
    return root, models


@pytest.mark.parametrize("spec", dae.NAMED_SPECS, ids=[s.name for s in dae.NAMED_SPECS])
def test_named_tokenizer_loads_its_release_layout(released_layout, spec):
    root, models = released_layout
    reference = models[_geometry_key(spec)]
    files = resolve_weights(spec, root, offline=True)
    assert all(Path(p).is_relative_to(root / spec.weights[0].local_dir) for p in files.values())
    tok = dae.build(spec, files, CPU, torch.float32)
    size = 64 if spec.config["downsample"] > 16 else 32
    x = torch.rand(1, 3, size, size)
    tokens = tok.encode(x)
    side = size // spec.config["downsample"]
    assert tokens.shape[-2:] == (side, side) and tokens.shape[1:-2] == spec.token_shape[:-2]
    torch.testing.assert_close(tok.decode(tokens), reference_reconstruction(reference, x), rtol=1e-5, atol=1e-5)


def test_named_spec_rejects_a_release_of_another_geometry(released_layout, tmp_path):
    _, models = released_layout
    flux1 = next(s for s in dae.NAMED_SPECS if s.name == "flux1_vae_512")
    models[("AutoencoderKL", 4, 8)].save_pretrained(tmp_path / "FLUX.1-dev" / "vae")  # SD's 4 channels, not 16
    with pytest.raises(CheckpointError, match="flux1_vae_512 expects"):
        dae.build(flux1, resolve_weights(flux1, tmp_path, offline=True), CPU, torch.float32)


def test_gated_named_weights_say_how_to_log_in(tmp_path):
    sd35 = next(s for s in dae.NAMED_SPECS if s.name == "sd35_vae_512")
    with pytest.raises(WeightsUnavailable, match=r"stable-diffusion-3\.5-large is gated.*huggingface-cli login"):
        resolve_weights(sd35, tmp_path, offline=True)
