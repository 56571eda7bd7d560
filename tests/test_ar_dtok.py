"""AR-DTok port vs tensors recorded from the original code (shared/golden/tatok_ardtok, tiny model, fp32 CPU).

The golden checkpoint is loaded through `ARDTok.from_pretrained`; teacher-forced logits, greedy and seeded sampled
codes, the top-k/top-p filter and the 4-token condition path are matched; negative controls show the goldens catch
the porting mistakes that matter; the full-size `llama-abs-LP` layouts are counted on the meta device.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tok.ar_dtok import AR_DTOK_SIZES, IGNORED_ARGS, ARDTok, ARDTokConfig, find_multiple, top_k_top_p_filter
from tok.checkpoint import CheckpointError, build_on_meta

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "tatok_ardtok"
CKPT = GOLDEN / "ar_dtok" / "ar_dtok_lp_512px.pth"
pytestmark = pytest.mark.skipif(not (GOLDEN / "io.safetensors").is_file() or not CKPT.is_file(),
                                reason=f"AR-DTok golden data not found at {GOLDEN}")

TOL = dict(atol=1e-4, rtol=0.0)  # README: logits atol 1e-4; codes exact
FILTERS = {"k5": (5, 1.0), "p0.9": (0, 0.9), "k5_p0.9": (5, 0.9), "k1": (1, 1.0)}
SAMPLE_PREFIX = "ar_dtok.sample_codes_seed"  # + seed and settings, e.g. ..._seed201_cfg4_t0.8_k10_p0.9
SAMPLE_SETTINGS = {"cfg": ("cfg_scale", float), "t": ("temperature", float), "k": ("top_k", int), "p": ("top_p", float)}


def sample_settings(key: str) -> tuple[int, dict[str, float | int]]:
    """A seeded-sample golden's name -> (seed, `generate` kwargs): the name records how upstream sampled it (after
    `torch.manual_seed(seed)`), so the test follows any golden set made the same way."""
    seed, *parts = key[len(SAMPLE_PREFIX):].split("_")
    kwargs: dict[str, float | int] = {}
    for part in parts:
        setting = re.fullmatch(r"([a-z]+)([0-9.]+)", part)
        assert setting and setting[1] in SAMPLE_SETTINGS, f"{key}: unknown sampling setting {part!r}"
        name, cast = SAMPLE_SETTINGS[setting[1]]
        kwargs[name] = cast(setting[2])
    return int(seed), kwargs


def _sample_keys() -> list[str]:
    """Collected before any fixture runs: the parametrization follows the golden file's keys."""
    if not (GOLDEN / "io.safetensors").is_file():
        return []
    with safe_open(str(GOLDEN / "io.safetensors"), "pt") as f:
        return sorted(k for k in f.keys() if k.startswith(SAMPLE_PREFIX))


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "io.safetensors"))


@pytest.fixture(scope="module")
def model() -> ARDTok:
    return ARDTok.from_pretrained(CKPT)


def _raw_checkpoint() -> dict:
    return torch.load(CKPT, map_location="cpu", weights_only=True)


def _save(ckpt: dict, tmp_path: Path) -> Path:
    path = tmp_path / "ar_dtok_lp_512px.pth"
    torch.save(ckpt, path)
    return path


def _cfg(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond_logits + (cond_logits - uncond_logits) * scale


def _greedy(model: ARDTok, cond: torch.Tensor, **kwargs) -> torch.Tensor:
    return model.generate(cond, top_k=1, generator=torch.Generator().manual_seed(0), **kwargs)


# ------------------------------------------------------------------------------------------------------ loading
def test_from_pretrained_reads_release_layout(model):
    cfg = model.config
    recorded = json.loads((GOLDEN / "meta.json").read_text())["ar_dtok"]  # what the golden file was made with
    arch, args = recorded["arch"], recorded["args"]
    assert (cfg.n_layer, cfg.n_head, cfg.dim) == AR_DTOK_SIZES[recorded["name"]] == (
        arch["n_layer"], arch["n_head"], arch["dim"])
    assert (cfg.vocab_size, cfg.cond_dim, cfg.cls_token_num, cfg.max_seq_len) == (
        args["vocab_size"], args["cond_dim"], args["cls_token_num"], args["max_seq_len"])
    assert cfg.ffn_hidden_dim == find_multiple(int(2 * 4 * cfg.dim / 3), 256)
    assert cfg.model_type == args["model_type"] and cfg.use_fixed_pe == args["use_fixed_pe"]
    assert not model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad and p.device.type == "cpu"
               for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(
        t.numel() for t in _raw_checkpoint()["model"]["sd"].values())
    assert set(model.state_dict()) == set(_raw_checkpoint()["model"]["sd"])


# --------------------------------------------------------------------------------------------- teacher forcing
def test_teacher_forced_logits(model, io):
    cond, codes = io["ar_dtok.cond"], io["ar_dtok.prefix_codes"]
    with torch.no_grad():
        c = model(codes, cond)
        u = model(codes, torch.zeros_like(cond))
    assert c.shape == (2, 64, 64)
    torch.testing.assert_close(c, io["ar_dtok.tf_logits"], **TOL)
    torch.testing.assert_close(u, io["ar_dtok.tf_logits_null_cond"], **TOL)
    torch.testing.assert_close(_cfg(c, u, 4.0), io["ar_dtok.tf_logits_cfg4"], **TOL)


@pytest.mark.parametrize("scale", [1, 4])
def test_greedy_codes(model, io, scale):
    codes = _greedy(model, io["ar_dtok.cond"], cfg_scale=float(scale))
    assert codes.dtype == torch.int64 and codes.shape == (2, 64)
    assert torch.equal(codes, io[f"ar_dtok.greedy_codes_cfg{scale}"])
    # greedy does not depend on the seed
    assert torch.equal(model.generate(io["ar_dtok.cond"], cfg_scale=float(scale), top_k=1,
                                      generator=torch.Generator().manual_seed(12345)), codes)


def test_greedy_teacher_forced_logits(model, io):
    cond = io["ar_dtok.cond"]
    with torch.no_grad():
        for scale in (1, 4):
            codes = io[f"ar_dtok.greedy_codes_cfg{scale}"]
            c = model(codes[:, :-1], cond)
            torch.testing.assert_close(c, io[f"ar_dtok.greedy_cfg{scale}.tf_logits_cond"], **TOL)
            if scale == 4:
                u = model(codes[:, :-1], torch.zeros_like(cond))
                torch.testing.assert_close(u, io["ar_dtok.greedy_cfg4.tf_logits_uncond"], **TOL)
                c = _cfg(c, u, 4.0)
            assert torch.equal(c.argmax(-1), codes)


def test_kv_cache_generation_equals_teacher_forced_argmax(model, io):
    """Generation with the cache vs the full causal forward (no goldens involved): the forward is causal, so
    logits[:, j] of the whole sequence are the step-by-step teacher-forced logits of prefix codes[:, :j]."""
    cond = io["ar_dtok.cond"] * 0.5
    codes = _greedy(model, cond, cfg_scale=2.5)
    with torch.no_grad():
        c, u = model(codes[:, :-1], cond), model(codes[:, :-1], torch.zeros_like(cond))
        assert torch.equal(_cfg(c, u, 2.5).argmax(-1), codes)
        for j in (0, 1, 17, 40):  # causality: a prefix alone gives the same logits
            torch.testing.assert_close(model(codes[:, :j], cond), c[:, :j + 1], atol=1e-5, rtol=0)


def test_cfg_interval_stops_guidance_after_step_k(model, io):
    cond = io["ar_dtok.cond"]
    codes = _greedy(model, cond, cfg_scale=4.0, cfg_interval=3)
    with torch.no_grad():
        c, u = model(codes[:, :-1], cond), model(codes[:, :-1], torch.zeros_like(cond))
    # prefill (code 0) and decode steps 0..3 (codes 1..4) are guided, later codes follow the condition alone
    assert torch.equal(codes[:, :5], _cfg(c, u, 4.0).argmax(-1)[:, :5])
    assert torch.equal(codes[:, 5:], c.argmax(-1)[:, 5:])
    assert not torch.equal(codes, io["ar_dtok.greedy_codes_cfg4"])
    assert torch.equal(_greedy(model, cond, cfg_scale=4.0, cfg_interval=64), io["ar_dtok.greedy_codes_cfg4"])


def test_no_state_left_on_model_after_generate(model, io):
    """Upstream leaves KV caches on the attention modules (a later forward fails until reset_caches())."""
    cond, codes = io["ar_dtok.cond"], io["ar_dtok.prefix_codes"]
    keys = set(model.state_dict())
    _greedy(model, cond, cfg_scale=4.0)
    assert set(model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(model(codes, cond), io["ar_dtok.tf_logits"], **TOL)
    assert torch.equal(_greedy(model, cond[:1]), io["ar_dtok.greedy_codes_cfg1"][:1])  # other batch size


# ------------------------------------------------------------------------------------------ 4-token condition
def test_pool2_four_token_condition(model, io):
    cond = io["ar_dtok.pool2.cond"]
    assert cond.shape[1] == 4 < model.config.cls_token_num
    codes = _greedy(model, cond, cfg_scale=4.0)
    assert torch.equal(codes, io["ar_dtok.pool2.greedy_codes_cfg4"])
    with torch.no_grad():
        c = model(codes[:, :-1], cond)
    torch.testing.assert_close(c, io["ar_dtok.pool2.greedy_cfg4.tf_logits_cond"], **TOL)


# ------------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("name", list(FILTERS))
def test_top_k_top_p_filter(io, name):
    top_k, top_p = FILTERS[name]
    logits = io["ar_dtok.filter.logits_in"]
    before = logits.clone()
    out = top_k_top_p_filter(logits, top_k, top_p)
    assert torch.equal(out, io[f"ar_dtok.filter.out_{name}"])  # kept logits unchanged, -inf elsewhere
    torch.testing.assert_close(out.float().softmax(-1), io[f"ar_dtok.filter.probs_{name}"], atol=1e-6, rtol=0)
    assert torch.equal(logits, before)  # input not modified


def test_filter_keeps_ties_and_first_token_over_p():
    logits = torch.tensor([[3.0, 1.0, 3.0, 2.0, 2.0]])
    assert torch.isfinite(top_k_top_p_filter(logits, 3)).tolist() == [[True, False, True, True, True]]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    # cumulative 0.5, 0.8, 0.95: with p = 0.6 the token crossing p (0.3) stays
    assert torch.isfinite(top_k_top_p_filter(probs.log(), 0, 0.6)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_k_top_p_filter(probs.log(), 0, 0.1)).tolist() == [[True, False, False, False]]


def test_seeded_sample_names_agree_with_the_recorded_seeds():
    keys = _sample_keys()
    recorded = json.loads((GOLDEN / "meta.json").read_text())["seeds"]
    assert keys and {sample_settings(k)[0] for k in keys} == {recorded["ar_sample"], recorded["ar_sample_filtered"]}


@pytest.mark.parametrize("key", _sample_keys())
def test_seeded_samples_reproduce_upstream(model, io, key):
    seed, kwargs = sample_settings(key)
    codes = model.generate(io["ar_dtok.cond"], generator=torch.Generator().manual_seed(seed), **kwargs)
    assert torch.equal(codes, io[key])
    with torch.random.fork_rng():  # generator=None draws from torch's global RNG, as upstream
        torch.manual_seed(seed)
        assert torch.equal(model.generate(io["ar_dtok.cond"], **kwargs), io[key])
    other = model.generate(io["ar_dtok.cond"], generator=torch.Generator().manual_seed(seed + 1000), **kwargs)
    assert not torch.equal(other, io[key])


def test_per_row_generators_do_not_depend_on_batch(model, io):
    cond = io["ar_dtok.cond"]

    def gens(*seeds: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = model.generate(cond, cfg_scale=4.0, generator=gens(5, 6))
    alone = torch.cat([model.generate(cond[:1], cfg_scale=4.0, generator=gens(5)),
                       model.generate(cond[1:], cfg_scale=4.0, generator=gens(6))])
    assert torch.equal(both, alone)
    assert torch.equal(model.generate(cond, cfg_scale=4.0, generator=gens(5, 7))[0], both[0])
    assert not torch.equal(model.generate(cond, cfg_scale=4.0, generator=gens(5, 7))[1], both[1])
    with pytest.raises(ValueError, match="per-row generators"):
        model.generate(cond, generator=gens(5))


def test_generate_rejects_bad_arguments(model, io):
    cond = io["ar_dtok.cond"]
    too_long = torch.zeros(1, model.config.cls_token_num + 1, 48)
    for kwargs, match in ((dict(cfg_scale=0.5), "cfg_scale"), (dict(top_k=-1), "top_k"),
                          (dict(top_p=0.0), "top_p"), (dict(temperature=-1.0), "temperature"),
                          (dict(cfg_interval=-2), "cfg_interval")):
        with pytest.raises(ValueError, match=match):
            model.generate(cond, **kwargs)
    with pytest.raises(ValueError, match="cls_token_num"):
        model.generate(too_long)
    with pytest.raises(ValueError, match="cond must be"):
        model.generate(torch.zeros(1, 4, 32))
    with pytest.raises(ValueError, match="max_seq_len - 1"):
        model(torch.zeros(2, 64, dtype=torch.long), cond)


def test_bf16_generation_runs(model, io):
    bf16 = ARDTok(model.config)
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16).eval()
    # top_k=1 keeps ties, and bf16 logits tie often: a fixed generator makes the tie-break independent of test order
    codes = bf16.generate(io["ar_dtok.cond"], cfg_scale=4.0, top_k=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = bf16(io["ar_dtok.prefix_codes"], io["ar_dtok.cond"])
    assert codes.dtype == torch.int64 and codes.shape == (2, 64) and 0 <= int(codes.min()) <= int(codes.max()) < 64
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), io["ar_dtok.tf_logits"], atol=0.5, rtol=0.05)
    # early codes, before a bf16 flip can propagate, agree with fp32
    assert (codes[:, :4] == io["ar_dtok.greedy_codes_cfg4"][:, :4]).float().mean() >= 0.75


# ---------------------------------------------------------------------------------------------- negative controls
def test_control_codes_at_position_zero_change_logits(model, io):
    """Planted mistake: codes take positions 0.. (as if the prefix had no positions of its own)."""
    cond, codes = io["ar_dtok.cond"], io["ar_dtok.prefix_codes"]
    t = cond.shape[1]
    with torch.no_grad():
        pe = torch.cat([model.abs_pe[:, :t], model.abs_pe[:, :codes.shape[1]]], dim=1)
        h = torch.cat([model.embed_condition(cond), model.tok_embeddings(codes)], dim=1) + pe
        for layer in model.layers:
            h = layer(h)
        wrong = model.output(model.norm(h[:, t - 1:]))
    assert (wrong - io["ar_dtok.tf_logits"]).abs().max() > 1e-2


def test_control_renamed_key_is_checkpoint_error(tmp_path):
    ckpt = _raw_checkpoint()
    sd = ckpt["model"]["sd"]
    sd["layers.0.attention.qkv.weight"] = sd.pop("layers.0.attention.wqkv.weight")
    with pytest.raises(CheckpointError, match=r"missing .*wqkv.*unexpected .*attention\.qkv"):
        ARDTok.from_pretrained(_save(ckpt, tmp_path))


def test_control_wrong_abs_pe_shape_is_checkpoint_error(tmp_path):
    """Upstream deletes a mis-shaped abs_pe and keeps random positions; here it is a loud error."""
    ckpt = _raw_checkpoint()
    ckpt["model"]["sd"]["abs_pe"] = torch.zeros(1, 100, 64)
    with pytest.raises(CheckpointError, match=r"abs_pe \(1, 100, 64\) != \(1, 79, 64\)"):
        ARDTok.from_pretrained(_save(ckpt, tmp_path))
    del ckpt["model"]["sd"]["abs_pe"]
    with pytest.raises(CheckpointError, match="missing .*abs_pe"):
        ARDTok.from_pretrained(_save(ckpt, tmp_path))


def test_file_layout_problems_are_checkpoint_errors(tmp_path):
    cases = {
        "unknown name": lambda c: c["model"].update(name="llama-abs-M"),
        "unknown arg": lambda c: c["model"]["args"].update(qk_norm=True),
        "size repeated": lambda c: c["model"]["args"].update(n_layer=2),
        "no sd": lambda c: c["model"].pop("sd"),
        "no args": lambda c: c["model"].pop("args"),
        "flat sd": lambda c: c.update(model=c["model"]["sd"]),
    }
    for plant in cases.values():
        ckpt = _raw_checkpoint()
        plant(ckpt)
        with pytest.raises(CheckpointError):
            ARDTok.from_pretrained(_save(ckpt, tmp_path))


def test_unported_settings_are_not_checkpoint_errors(tmp_path):
    """A port limitation must fail loudly, not look like a bad weight file."""
    for plant in ({"model_type": "indice_cond"}, {"frame_prediction": True}, {"n_kv_head": 2}):
        ckpt = _raw_checkpoint()
        ckpt["model"]["args"].update(plant)
        with pytest.raises(NotImplementedError):
            ARDTok.from_pretrained(_save(ckpt, tmp_path))
    ckpt = _raw_checkpoint()
    del ckpt["model"]["args"]["model_type"]  # upstream default: class_cond
    with pytest.raises(NotImplementedError, match="class_cond"):
        ARDTok.from_pretrained(_save(ckpt, tmp_path))


# ------------------------------------------------------------------------------------------------------- config
def test_config_from_name():
    args = json.loads(json.dumps({**_raw_checkpoint()["model"]["args"], "rope_base": 500.0}))
    cfg = ARDTokConfig.from_name("llama-abs-tiny", args)
    assert (cfg.n_layer, cfg.n_head, cfg.dim, cfg.max_seq_len, cfg.pe_length) == (2, 4, 64, 64, 79)
    assert set(IGNORED_ARGS) >= {"class_dropout_prob", "token_dropout_p", "resid_dropout_p", "ffn_dropout_p"}
    with pytest.raises(ValueError, match="unknown AR-DTok model name 'llama-abs-M'.*llama-abs-LP"):
        ARDTokConfig.from_name("llama-abs-M", args)
    with pytest.raises(ValueError, match="not understood.*qk_norm"):
        ARDTokConfig.from_name("llama-abs-tiny", {**args, "qk_norm": True})
    with pytest.raises(ValueError, match="repeat dim"):
        ARDTokConfig.from_name("llama-abs-tiny", {**args, "dim": 64})
    assert ARDTokConfig.from_name("llama-abs-tiny", {**args, "norm_eps": 1e-6}).norm_eps == 1e-6
    assert ARDTokConfig.from_name("llama-abs-B", {"model_type": "clip_cond", "ffn_dim_multiplier": 1.3,
                                                  "multiple_of": 128}).ffn_hidden_dim == 2688


def test_fixed_pe_is_a_persistent_sincos_buffer():
    cfg = ARDTokConfig(n_layer=1, n_head=2, dim=8, vocab_size=16, cond_dim=4, cls_token_num=3, max_seq_len=5,
                       use_fixed_pe=True)
    m = ARDTok(cfg)
    assert "abs_pe" in dict(m.named_buffers()) and "abs_pe" in m.state_dict()
    assert "abs_pe" not in dict(m.named_parameters())
    pos = torch.arange(7.0)[:, None] * (1.0 / 10000 ** (torch.arange(4.0) / 4))[None]
    torch.testing.assert_close(m.abs_pe[0], torch.cat([pos.sin(), pos.cos()], dim=1))


@pytest.mark.parametrize("px,seq_len", [(256, 256), (512, 1024), (1024, 4096)])
def test_full_size_lp_parameter_counts(px, seq_len):
    ref = json.loads((GOLDEN / "full_size_params.json").read_text())[f"ar_dtok_lp_{px}px"]
    cfg = ARDTokConfig.from_name("llama-abs-LP", {"vocab_size": 16384, "cond_dim": 1152, "model_type": "clip_cond",
                                                  "cls_token_num": 729, "max_seq_len": seq_len})
    m = build_on_meta(ARDTok, cfg)
    assert cfg.ffn_hidden_dim == ref["ffn_hidden"] == 3584
    assert list(m.abs_pe.shape) == ref["abs_pe"]
    by_module = {name: sum(p.numel() for n, p in m.named_parameters() if n.split(".")[0] == name)
                 for name in ref["by_module"]}
    assert by_module == ref["by_module"]
    assert sum(p.numel() for p in m.parameters()) == ref["total"]


def test_registry_holds_upstream_sizes():
    assert {k: v for k, v in AR_DTOK_SIZES.items() if k != "llama-abs-tiny"} == {
        "llama-abs-S": (12, 6, 384), "llama-abs-B": (12, 12, 768), "llama-abs-L": (24, 16, 1024),
        "llama-abs-LP": (30, 20, 1280), "llama-abs-XL": (36, 20, 1280), "llama-abs-XXL": (48, 24, 1536),
        "llama-abs-XXXL": (48, 40, 2560)}
