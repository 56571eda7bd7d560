"""Tar-Lumina2 de-tokenizer port vs tensors recorded from the original code (shared/golden/tar_diffusion_dtok/lumina2,
tiny random weights in the released layouts, fp32 CPU, 4 time points = 3 transformer calls, 1024 px).

Everything goes through the real loaders (`Lumina2DTok.from_pretrained`); one sampling run is recorded with hooks
and every golden stage is matched; negative controls plant the porting mistakes the README names; the full-size
configs are counted on the meta device.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import recorded_seed
from tok.checkpoint import CheckpointError, read_checkpoint
from tok.lumina2_dtok import (
    NEXTDIT_ARCHS,
    Lumina2DTok,
    NextDiT,
    NextDiTConfig,
    draw_noise,
    encode_prompt,
    euler_sample,
    load_flux_vae,
    load_gemma,
    prepare_condition,
    time_grid,
)
from tok.lumina2_dtok import nextdit as nextdit_module

ROOT = Path(__file__).resolve().parents[2] / "shared" / "golden" / "tar_diffusion_dtok"
GOLDEN = ROOT / "lumina2"
MODEL, VAE, GEMMA = GOLDEN / "Tar-Lumina2", GOLDEN / "FLUX.1-dev" / "vae", GOLDEN / "gemma-2-2b"
pytestmark = pytest.mark.skipif(not (GOLDEN / "io.safetensors").is_file(),
                                reason=f"Tar-Lumina2 golden data not found at {GOLDEN}")

TOL = dict(atol=1e-4, rtol=0.0)  # README: atol 1e-4 on every float key (observed run-to-run noise <= 3e-6)
RECORDED = json.loads((ROOT / "meta.json").read_text())["lumina2"] if (ROOT / "meta.json").is_file() else {}
STEPS = RECORDED.get("num_sampling_steps", 0)  # the golden's time points (one transformer call fewer)
SHIFT = RECORDED.get("time_shifting_factor", 0.0)
BRANCH_POINTS = {  # golden key -> (module path inside the NextDiT, first call only)
    "cond.cap_embedder_out": "cap_embedder", "cond.context_refiner_out": "context_refiner.1",
    "cond.cond_embedder_out": "cond_embedder", "cond.cond_refiner_out": "cond_refiner.1",
    "step0.x_embedder_out": "x_embedder", "step0.noise_refiner_out": "noise_refiner.1",
}


# ----------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "io.safetensors"))


@pytest.fixture(scope="module")
def dtok() -> Lumina2DTok:
    return Lumina2DTok.from_pretrained(MODEL, VAE, GEMMA, torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def run(dtok, io) -> dict[str, torch.Tensor]:
    """One `generate` call as the golden ran (noise = inputs.z), every recorded stage captured by hooks."""
    seen: dict[str, torch.Tensor] = {}
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    modules = dict(dtok.transformer.named_modules())

    def keep_first(key: str):
        def hook(_module, _args, out) -> None:  # returns None: a hook's return value would replace the output
            if key not in seen:
                seen[key] = out.clone()
        return hook

    handles = [modules[path].register_forward_hook(keep_first(key)) for key, path in BRANCH_POINTS.items()]
    handles.append(dtok.transformer.register_forward_hook(
        lambda _m, args, out: calls.append((args[0].clone(), args[1].clone(), out.clone())) and None))
    vae_decode = dtok.vae.decode

    def recording_decode(z, *args, **kwargs):
        seen["outputs.vae_input"] = z.clone()
        out = vae_decode(z, *args, **kwargs)
        seen["outputs.vae_decoded"] = out.sample.clone()
        return out

    latents_seen: list[torch.Tensor] = []
    sample = dtok.sample_latents
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dtok.vae, "decode", recording_decode)
        mp.setattr(dtok, "sample_latents", lambda *a, **k: latents_seen.append(sample(*a, **k)) or latents_seen[-1])
        try:
            seen["image"] = dtok.generate(io["inputs.features"], steps=STEPS, noise=io["inputs.z"])
        finally:
            for h in handles:
                h.remove()
    seen["outputs.latents_final"] = latents_seen[0]
    for i, (x, t, v) in enumerate(calls):
        seen[f"step{i}.x"], seen[f"step{i}.t"], seen[f"step{i}.model_output"] = x, t, v
    seen["n_calls"] = torch.tensor(len(calls))
    return seen


def _to_uint8_truncating(image: torch.Tensor) -> torch.Tensor:
    """Upstream's `to_pil_image`: (x * 255).byte() truncates (the benchmark itself rounds)."""
    return (image[0].permute(1, 2, 0) * 255).to(torch.uint8)


def _assert_uint8_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    diff = (ours.int() - ref.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) <= 0.01


# ----------------------------------------------------------------------------------------------- conditioning goldens
def test_prompt_embedding_is_gemma_penultimate_layer_without_softcapping(dtok, io):
    assert torch.equal(dtok.cap_mask, io["inputs.attention_mask"])  # 53 real tokens, right-padded to 56
    torch.testing.assert_close(dtok.cap_feats, io["cond.cap_feats"], **TOL)


def test_gemma_with_softcapping_would_be_caught(io):
    """Negative control: transformers 5's eager Gemma-2 with its logit soft-capping is not what upstream ran."""
    from transformers import AutoTokenizer, Gemma2Model

    tokenizer = AutoTokenizer.from_pretrained(GEMMA, padding_side="right")
    capped = Gemma2Model.from_pretrained(GEMMA, attn_implementation="eager").eval()
    feats, _ = encode_prompt(tokenizer, capped)
    assert (feats - io["cond.cap_feats"]).abs().max() > 100 * TOL["atol"]


def test_condition_image(io):
    cond = prepare_condition(io["inputs.features"])
    assert cond.shape == (1, 1152, 128, 128) and cond.dtype == torch.float32
    torch.testing.assert_close(cond[0, :8], io["cond.cond_in_first8ch"], **TOL)


@pytest.mark.parametrize("key", sorted(BRANCH_POINTS))
def test_branch_stage(run, io, key):
    torch.testing.assert_close(run[key], io[key], **TOL)


# --------------------------------------------------------------------------------------------------- sampler goldens
def test_time_grid(io):
    assert torch.equal(time_grid(STEPS, SHIFT), io["sched.t"])
    real = json.loads((ROOT / "schedules.json").read_text())["lumina2_euler_timegrid_shift6_50points"]
    assert torch.equal(time_grid(50), torch.tensor(real["t"]))  # defaults: 50 points, shift 6
    calls = []
    euler_sample(lambda x, t: calls.append(t) or torch.zeros_like(x), torch.zeros(1, 1), time_grid(50))
    assert len(calls) == real["transformer_calls"] == 49


def test_noise_from_a_seeded_generator_is_upstreams_global_draw(io):
    seed = recorded_seed(RECORDED["noise"])  # the golden drew inputs.z from torch's global RNG after this seed
    noise = io["inputs.z"]
    assert torch.equal(draw_noise(tuple(noise.shape), torch.Generator().manual_seed(seed)), noise)
    assert not torch.equal(draw_noise(tuple(noise.shape), torch.Generator().manual_seed(seed + 1)), noise)


def test_one_transformer_call_per_step(run):
    assert int(run["n_calls"]) == STEPS - 1


@pytest.mark.parametrize("i", range(STEPS - 1))
def test_step(run, io, i):
    torch.testing.assert_close(run[f"step{i}.t"], io[f"step{i}.t"], atol=0, rtol=0)
    torch.testing.assert_close(run[f"step{i}.x"], io["inputs.z"] if i == 0 else io[f"step{i}.x"], **TOL)
    torch.testing.assert_close(run[f"step{i}.model_output"], io[f"step{i}.model_output"], **TOL)


@pytest.mark.parametrize("key", ["outputs.latents_final", "outputs.vae_input", "outputs.vae_decoded"])
def test_outputs(run, io, key):
    torch.testing.assert_close(run[key], io[key], **TOL)


def test_image(run, io):
    image = run["image"]
    assert image.shape == (1, 3, 1024, 1024) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    _assert_uint8_close(_to_uint8_truncating(image), io["outputs.image_uint8"])


def test_golden_image_was_truncated_not_rounded(run, io):
    """Upstream truncates to uint8 (the project rounds): rounding our floats must disagree with the golden a lot."""
    rounded = (run["image"][0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    assert float((rounded != io["outputs.image_uint8"]).float().mean()) > 0.3


def test_seed_benchmark_512px_is_a_lanczos_resize(run, io):
    import numpy as np
    from PIL import Image

    small = Image.fromarray(_to_uint8_truncating(run["image"]).numpy()).resize((512, 512), Image.LANCZOS)
    _assert_uint8_close(torch.from_numpy(np.array(small)), io["outputs.image_512_lanczos_uint8"])


# -------------------------------------------------------------------------------------------------- negative controls
def _velocity(dtok: Lumina2DTok, io, i: int) -> torch.Tensor:
    with torch.no_grad():
        context = dtok.prepare_context(io["inputs.features"])
        x = io["inputs.z"] if i == 0 else io[f"step{i}.x"]
        return dtok.transformer(x, io[f"step{i}.t"], context)


def test_condition_tokens_modulated_with_current_t_would_be_caught(dtok, io, monkeypatch):
    monkeypatch.setattr(NextDiT, "condition_time", staticmethod(lambda t: t))
    v = _velocity(dtok, io, 1)
    assert (v - io["step1.model_output"]).abs().max() > 100 * TOL["atol"]


def test_image_sharing_the_condition_frame_would_be_caught(dtok, io, monkeypatch):
    """Position layout: image tokens at frame cap_len (like the condition) instead of cap_len + 1."""
    original = nextdit_module.position_ids

    def shared_frame(cap_len, cond_hw, img_hw, device=None):
        cap, cond, img = original(cap_len, cond_hw, img_hw, device)
        img[:, 0] = cap_len
        return cap, cond, img

    monkeypatch.setattr(nextdit_module, "position_ids", shared_frame)
    v = _velocity(dtok, io, 1)
    assert (v - io["step1.model_output"]).abs().max() > 100 * TOL["atol"]


def test_unshifted_time_grid_would_be_caught(io):
    """Euler over the recorded velocities reproduces the final latents on the shifted grid only."""
    for shift, close in ((SHIFT, True), (None, False)):
        velocities = iter(io[f"step{i}.model_output"] for i in range(STEPS - 1))
        x = euler_sample(lambda x, t, vs=velocities: next(vs), io["inputs.z"], time_grid(STEPS, shift))
        error = float((x - io["outputs.latents_final"]).abs().max())
        assert (error <= TOL["atol"]) if close else (error > 100 * TOL["atol"])


# --------------------------------------------------------------------------------------------------------- batching
def test_batch_of_two_equals_two_batches_of_one(dtok, io):
    """Per-row generators: a row's image depends on its own generator only (256 px and 2 calls keep this quick)."""
    features = torch.cat([io["inputs.features"], io["inputs.features"].flip(1)])
    settings = dict(steps=3, resolution=256)
    both = dtok.generate(features, generator=[torch.Generator().manual_seed(s) for s in (7, 8)], **settings)
    rows = [dtok.generate(features[i:i + 1], generator=[torch.Generator().manual_seed(s)], **settings)
            for i, s in enumerate((7, 8))]
    assert both.shape == (2, 3, 256, 256)
    torch.testing.assert_close(both, torch.cat(rows), **TOL)
    assert (both[0] - both[1]).abs().max() > 0.01  # the rows really differ


def test_rejects_settings_upstream_does_not_define(dtok, io):
    with pytest.raises(ValueError, match="guidance"):
        dtok.generate(io["inputs.features"], guidance_scale=4.0)
    with pytest.raises(ValueError, match="square"):
        dtok.generate(io["inputs.features"][:, :728])
    with pytest.raises(ValueError, match=r"\(B, N, 1152\)"):
        dtok.generate(io["inputs.features"][..., :1000])
    with pytest.raises(ValueError, match="generators"):
        dtok.generate(io["inputs.features"], generator=[torch.Generator()] * 2, steps=2, resolution=64)


# ----------------------------------------------------------------------------------------------------------- loading
def test_tiny_architecture_is_the_one_in_model_args():
    fields = read_checkpoint(MODEL / "model_args.pth").fields()
    arch = dict(NEXTDIT_ARCHS[fields["model"]])
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()} == fields["tiny_nextdit_config"]


def _copy_release(tmp_path: Path) -> Path:
    folder = tmp_path / "Tar-Lumina2"
    shutil.copytree(MODEL, folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


def test_strict_loading_names_the_missing_key(tmp_path):
    folder = _copy_release(tmp_path)
    weights = folder / "consolidated_ema.00-of-01.pth"
    state = torch.load(weights, weights_only=True)
    del state["cond_embedder.1.bias"]
    torch.save(state, weights)
    with pytest.raises(CheckpointError, match=r"cond_embedder\.1\.bias"):
        NextDiT.from_pretrained(folder, cap_feat_dim=32)


def test_unknown_architecture_and_missing_files_are_checkpoint_errors(tmp_path):
    folder = _copy_release(tmp_path)
    torch.save(argparse.Namespace(model="NextDiT_9B_Unknown", qk_norm=True), folder / "model_args.pth")
    with pytest.raises(CheckpointError, match="unknown architecture"):
        NextDiT.from_pretrained(folder, cap_feat_dim=32)
    (folder / "model_args.pth").unlink()
    with pytest.raises(CheckpointError, match="huggingface-cli download csuhan/Tar-Lumina2"):
        NextDiT.from_pretrained(folder, cap_feat_dim=32)
    with pytest.raises(CheckpointError, match="huggingface-cli login"):
        load_flux_vae(tmp_path / "FLUX.1-dev")


@pytest.mark.parametrize("keep", [(), ("config.json", "tokenizer.json", "tokenizer_config.json")])
def test_missing_gemma_says_how_to_get_the_gated_model(tmp_path, keep):
    folder = tmp_path / "gemma-2-2b"
    if keep:
        folder.mkdir()
        for name in keep:
            shutil.copy(GEMMA / name, folder / name)
    with pytest.raises(CheckpointError) as err:
        load_gemma(folder)
    message = str(err.value)
    assert "huggingface-cli login" in message and "huggingface-cli download google/gemma-2-2b" in message
    assert "licence" in message and ("weights" in message if keep else "no such folder" in message)


# --------------------------------------------------------------------------------------------- full size (meta device)
@pytest.fixture(scope="module")
def fullsize() -> dict:
    return json.loads((ROOT / "fullsize.json").read_text())


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_nextdit(fullsize):
    ref = fullsize["configs"]["lumina2_nextdit (tok.lumina2_model.NextDiT_2B_GQA_patch2_Adaln_Refiner + loader kwargs)"]
    config = NextDiTConfig(**NEXTDIT_ARCHS["NextDiT_2B_GQA_patch2_Adaln_Refiner"], qk_norm=True, cap_feat_dim=2304)
    for key, value in ref.items():
        if key != "qk_norm":
            assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value), key
    with torch.device("meta"):
        model = NextDiT(config)
    counts = fullsize["param_counts"]
    assert _count(model) == counts["lumina2_nextdit_total"]
    for name, child in model.named_children():
        assert _count(child) == counts[f"lumina2_nextdit.{name}"], name


def test_full_size_flux_vae_and_gemma(fullsize):
    from diffusers import AutoencoderKL
    from transformers import Gemma2Config, Gemma2Model

    configs, counts = fullsize["configs"], fullsize["param_counts"]
    with torch.device("meta"):
        vae = AutoencoderKL(**configs["flux_vae (AutoencoderKL, FLUX.1-dev/vae)"])
        gemma = Gemma2Model(Gemma2Config(**configs["gemma_2_2b (Gemma2Config, non-default fields)"]))
    assert _count(vae) == counts["flux_vae_total"] and _count(vae.decoder) == counts["flux_vae_decoder"]
    assert _count(gemma) == counts["gemma2_2b_model"]
    assert gemma.config.hidden_size == NextDiTConfig().cap_feat_dim  # the DiT's caption width is Gemma's


def test_bf16_runs_end_to_end_near_fp32(io):
    """Upstream's precision: bf16 weights (informational bound; README: upstream bf16 vs fp32 moves latents 0.071)."""
    dtok16 = Lumina2DTok.from_pretrained(MODEL, VAE, GEMMA, torch_dtype=torch.bfloat16)
    assert dtok16.transformer.dtype == dtok16.vae.dtype == dtok16.cap_feats.dtype == torch.bfloat16
    latents = dtok16.sample_latents(io["inputs.features"], steps=STEPS, noise=io["inputs.z"])
    assert latents.dtype == torch.float32
    assert float((latents - io["outputs.latents_final"]).abs().max()) < 0.2
