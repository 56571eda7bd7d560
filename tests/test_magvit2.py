"""Open-MAGVIT2 port vs goldens from the original code (../shared/golden/magvit2, see its README for the spec).

Fast CPU fp32 checks: every recorded stage, the loader's key handling, the full-size structure (on meta), and
negative controls showing the comparisons catch the plausible porting mistakes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vision_tokenizers as vt
from tok.magvit2 import CheckpointError, Magvit2Tokenizer, depth_to_space, load_magvit2_checkpoint, parameter_counts
from tok.magvit2.checkpoint import load_magvit2_state_dict, read_state_dict
from tok.magvit2.model import Upsampler
from vision_tokenizers.base import to_uint8
from vision_tokenizers.magvit2 import read_config

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "magvit2"
pytestmark = pytest.mark.skipif(not (GOLDEN / "io.safetensors").is_file(),
                                reason=f"magvit2 goldens not found at {GOLDEN} (../shared/golden beside the repo)")

ATOL = 5e-5  # README: fp32 noise <= 6.3e-6; planted errors >= 1e-4
CASES = ("", "rect_")  # square B=2 64x64 -> 16x16, rect B=1 64x96 -> 16x24


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(GOLDEN / "io.safetensors")


@pytest.fixture(scope="module")
def tok():
    return vt.load("magvit2_tiny", weights_dir=GOLDEN.parent, offline=True)


@pytest.fixture(scope="module")
def ckpt_sd() -> dict[str, torch.Tensor]:
    return read_state_dict(GOLDEN / "magvit2_tiny.ckpt")


def fresh_model(tok) -> Magvit2Tokenizer:
    cfg = read_config(tok.spec, {"config.json": GOLDEN / "config.json"})
    return Magvit2Tokenizer(cfg["ddconfig"], cfg["n_embed"], cfg["embed_dim"]).eval()


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


# --- the real loader and every recorded stage ---------------------------------------------------------------------

def test_loader_reports_dropped_groups(tok):
    report = tok.load_report
    assert report.source == "ema" and len(report.loaded) == 58 + 71
    assert report.dropped_counts() == {
        "raw encoder/decoder": 129, "loss.perceptual_loss": 7, "loss.discriminator": 22,
        "model_ema scalars": 2, "model_ema.lossdiscriminator": 13,
    }
    assert all(reason for reason, _ in report.dropped.values())


@pytest.mark.parametrize("case", CASES, ids=("square", "rect"))
def test_encode_stages(tok, golden, case):
    g = {k[len(case):]: v for k, v in golden.items() if k.startswith(case)}
    close(tok.encode_latents(g["image_01"]), g["pre_quant"])
    with torch.no_grad():
        quant, indices, pre_quant = tok.model.encode(g["encoder_input"])
    close(pre_quant, g["pre_quant"])
    assert torch.equal(quant, g["quant"])
    assert torch.equal(indices, g["indices"])

    ids = tok.encode(g["image_01"])  # the suite's path: [0,1] pixels
    assert ids.dtype == torch.int64 and ids.shape == g["indices"].shape
    assert torch.equal(ids, g["indices"])
    assert torch.equal(ids.flatten(), g["indices_flat"])  # upstream's flat (b, h, w) row-major order


@pytest.mark.parametrize("case", CASES, ids=("square", "rect"))
def test_indices_to_latent_and_decode(tok, golden, case):
    g = {k[len(case):]: v for k, v in golden.items() if k.startswith(case)}
    b, c, h, w = g["quant"].shape
    lfq = tok.model.quantize
    assert torch.equal(lfq.get_codebook_entry(g["indices_flat"].view(b, -1), (b, h, w, c)), g["quant_from_indices"])
    assert torch.equal(lfq.indices_to_codes(g["indices"]), g["quant_from_indices"])
    with torch.no_grad():
        close(tok.model.decode(g["quant"]), g["decoded"])
        close(tok.model.decode_code(g["indices"]), g["decoded_from_indices"])

    out01 = tok.decode(g["indices"])  # the suite's path; golden decoded == decoded_from_indices exactly
    for stage in ("decoded", "decoded_from_indices"):
        close(out01, g[f"{stage}_01"])
        # upstream truncates to uint8, the suite rounds: both within 1 of the golden
        assert (out01.mul(255).to(torch.uint8).int() - g[f"{stage}_uint8"].int()).abs().max() <= 1
        assert (to_uint8(out01).int() - g[f"{stage}_uint8"].int()).abs().max() <= 1


def test_codebook(tok, golden):
    assert torch.equal(tok.model.quantize.codebook(), golden["codebook"])


def test_batched_equals_per_image(tok, golden):
    ids = tok.encode(golden["image_01"])
    assert torch.equal(torch.cat([tok.encode(golden["image_01"][i:i + 1]) for i in range(2)]), ids)
    close(torch.cat([tok.decode(ids[i:i + 1]) for i in range(2)]), tok.decode(ids))


def test_bf16_runs_close(tok, golden):
    # one 32x32 crop: CPUs without native bf16 run these convolutions slowly; fp32 output is pinned above
    x = golden["image_01"][:1, :, 16:48, 16:48]
    tok16 = vt.load("magvit2_tiny", weights_dir=GOLDEN.parent, offline=True, dtype="bf16")
    ids = tok16.encode(x)
    assert ids.dtype == torch.int64 and ids.shape == (1, 8, 8)
    assert (ids == tok.encode(x)).float().mean() > 0.9  # bf16 flips only near-zero latents
    out = tok16.decode(ids)
    assert out.dtype == torch.float32
    close(out, tok.decode(ids), atol=0.1)


def test_decode_rejects_bad_ids(tok):
    with pytest.raises(ValueError, match="ids must be in"):
        tok.decode(torch.full((1, 16, 16), 64))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        tok.decode(torch.zeros(1, 256, dtype=torch.long))


# --- negative controls: the comparisons above catch these mistakes ---------------------------------------------

def test_raw_weights_differ_and_match_diagnostic(tok, golden, ckpt_sd):
    model = fresh_model(tok)
    report = load_magvit2_state_dict(ckpt_sd, model, use_ema=False)
    assert report.source == "raw" and report.dropped_counts()["model_ema encoder/decoder"] == 129
    with torch.no_grad():
        _, indices, pre_quant = model.encode(golden["encoder_input"])
    close(pre_quant, golden["diag_raw_weights_pre_quant"])
    assert torch.equal(indices, golden["diag_raw_weights_indices"])
    assert (indices != golden["indices"]).float().mean() > 0.5


def test_reversed_bit_order_changes_ids(golden):
    bits = (golden["quant"] > 0).long()
    c = bits.shape[1]
    lsb_first = (bits * (2 ** torch.arange(c)).view(1, -1, 1, 1)).sum(1)
    msb_first = (bits * (2 ** torch.arange(c - 1, -1, -1)).view(1, -1, 1, 1)).sum(1)
    assert torch.equal(lsb_first, golden["indices"])
    assert (msb_first != golden["indices"]).float().mean() > 0.5


def test_pixel_shuffle_instead_of_dcr_changes_decoded(tok, golden, monkeypatch):
    for module in tok.model.decoder.modules():
        if isinstance(module, Upsampler):
            monkeypatch.setattr(module, "depth2space", lambda x, block_size: F.pixel_shuffle(x, block_size))
    with torch.no_grad():
        wrong = tok.model.decode(golden["quant"])
    assert (wrong - golden["decoded"]).abs().max() > 1.0


def test_dcr_is_pixel_shuffle_after_channel_regroup():
    x = torch.randn(2, 4 * 3, 5, 7)
    regrouped = x.view(2, 4, 3, 5, 7).transpose(1, 2).reshape(2, 12, 5, 7)  # (4, C) -> (C, 4)
    assert torch.equal(depth_to_space(x, 2), F.pixel_shuffle(regrouped, 2))
    assert not torch.equal(depth_to_space(x, 2), F.pixel_shuffle(x, 2))


def test_renamed_key_raises(tok, ckpt_sd, tmp_path):
    renamed = dict(ckpt_sd)
    renamed["model_ema.encoderconv_inweightX"] = renamed.pop("model_ema.encoderconv_inweight")
    with pytest.raises(CheckpointError, match="encoderconv_inweightX"):
        load_magvit2_state_dict(renamed, fresh_model(tok))
    path = tmp_path / "renamed.ckpt"
    torch.save({"state_dict": renamed}, path)
    with pytest.raises(CheckpointError):
        load_magvit2_checkpoint(path, fresh_model(tok))


def test_missing_weight_and_unknown_key_raise(tok, ckpt_sd):
    missing = {k: v for k, v in ckpt_sd.items() if k != "model_ema.decoderconv_outbias"}
    with pytest.raises(CheckpointError, match=r"decoder\.conv_out\.bias"):
        load_magvit2_state_dict(missing, fresh_model(tok))
    for extra in ("quantize.codebook", "encoder.conv_in.weightX", "model_ema.encoderfoo"):
        with pytest.raises(CheckpointError, match="known training-only group"):
            load_magvit2_state_dict({**ckpt_sd, extra: torch.zeros(1)}, fresh_model(tok))
    no_ema = {k: v for k, v in ckpt_sd.items() if not k.startswith("model_ema.")}
    with pytest.raises(CheckpointError, match="use_ema=False"):
        load_magvit2_state_dict(no_ema, fresh_model(tok))


class _Opaque:  # not on torch's weights_only allow-list: stands for Lightning's AttributeDict, callbacks...
    def __init__(self):
        self.lr = 1e-4


def test_lightning_checkpoint_with_training_state_loads(tok, ckpt_sd, tmp_path):
    """Released .ckpt files carry hyper_parameters, callbacks and optimizer state: the tensors load anyway."""
    path = tmp_path / "with_state.ckpt"
    torch.save({"state_dict": ckpt_sd, "hyper_parameters": _Opaque(), "callbacks": {"ModelCheckpoint": _Opaque()},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2)}}}], "epoch": 3}, path)
    model = fresh_model(tok)
    load_magvit2_checkpoint(path, model)
    for name, value in tok.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


# --- the released full-size structure ---------------------------------------------------------------------------

def test_full_size_256_structure_on_meta():
    ref = json.loads((GOLDEN / "full_size_256.json").read_text())
    spec = vt.get_spec("magvit2_256")
    cfg = read_config(spec, {})  # no config.json shipped with the release: the spec's copy of the yaml
    init_args = ref["config"]["model"]["init_args"]
    assert cfg == {k: init_args[k] for k in ("ddconfig", "n_embed", "embed_dim", "use_ema")}
    with torch.device("meta"):
        model = Magvit2Tokenizer(cfg["ddconfig"], cfg["n_embed"], cfg["embed_dim"])
    assert parameter_counts(model) == {"encoder": 49_751_442, "decoder": 65_376_387, "quantize": 0}
    expected = {k: v["shape"] for k, v in ref["state_dict"].items() if k.startswith(("encoder.", "decoder."))}
    assert len(expected) == 339
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected
    assert not list(model.quantize.buffers())  # nothing persistent or 2^18-sized lives in LFQ


def test_full_size_lfq_bit_weights():
    with torch.device("meta"):
        model = Magvit2Tokenizer(vt.get_spec("magvit2_256").config["ddconfig"], 2**18, 18)
    lfq = model.quantize
    x = -torch.ones(1, 18, 1, 2)
    x[0, 17, 0, 0] = 1.0  # top bit only
    x[0, :, 0, 1] = 1.0  # all bits
    _, ids = lfq(x)
    assert ids.tolist() == [[[2**17, 2**18 - 1]]]
    assert torch.equal(lfq.indices_to_codes(ids), x)
