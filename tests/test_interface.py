"""The tokenizer interface's seams: bugs fail (never skip), pixel range and encoder size as data, seeded sampling,
shared components, settings, and reports that stand on their records."""

from __future__ import annotations

import dataclasses
import gc
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import vision_tokenizers as vt
from tests.helpers import REPO, shared_path
from vision_tokenizers.base import BaseTokenizer, image_generators, image_seed
from vision_tokenizers.components import component_key, loaded_components, release_components, shared_component
from vision_tokenizers.evaluate import evaluate
from vision_tokenizers.spec import TokenizerSpec


class _Noisy(BaseTokenizer):
    """A sampling de-tokenizer: adds per-image noise drawn from the image's generator."""

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.seen_range = (float(pixels.min()), float(pixels.max()))
        self.seen_size = tuple(pixels.shape[-2:])
        return pixels

    def _decode(self, tokens: torch.Tensor, generator=None) -> torch.Tensor:
        gens = generator if isinstance(generator, list) else [generator] * len(tokens)
        noise = torch.stack([torch.randn(3, 32, 32, generator=g) for g in gens])
        up = torch.nn.functional.interpolate(tokens, size=(32, 32), mode="nearest")
        return up + 0.2 * noise


SPEC = TokenizerSpec("noisy", "test", 32, "continuous", (3, 16, 16), 8, pixel_range=(-1.0, 1.0),
                     encoder_resolution=16, encoder_resize="bilinear-antialias", stochastic=True,
                     settings={"steps": 50, "guidance": 1.0}, presets={"upstream": {"steps": 28}})


def test_range_conversion_and_encoder_resize_are_done_once_by_the_base_class():
    tok = _Noisy(SPEC)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seen = tok.encode(pixels)
    expected = torch.nn.functional.interpolate(pixels, size=(16, 16), mode="bilinear", antialias=True) * 2 - 1
    assert tok.seen_size == (16, 16)
    torch.testing.assert_close(seen, expected)  # resized to the encoder's size, then mapped to [-1, 1]
    out = tok.decode(seen, image_generators(0, ["a", "b"]))
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1


def test_sampling_depends_on_run_seed_and_image_id_only():
    tok = _Noisy(SPEC)
    ids = [f"img{i}" for i in range(5)]
    batches = [(ids, (torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).round().byte())]

    def run(batch_size: int, order: list[int], seed: int = 7):
        pix = batches[0][1][order]
        names = [ids[i] for i in order]
        split = [(names[i:i + batch_size], pix[i:i + batch_size]) for i in range(0, 5, batch_size)]
        rows = {}
        evaluate(tok, split, run_seed=seed, on_batch=lambda b: rows.update(
            {i: (b.reconstruction[k], b.seeds[k]) for k, i in enumerate(b.ids)}))
        return rows

    one, three, shuffled = run(1, [0, 1, 2, 3, 4]), run(3, [0, 1, 2, 3, 4]), run(2, [4, 2, 0, 3, 1])
    for image_id in ids:
        reference = one[image_id][0]
        assert torch.equal(reference, three[image_id][0]) and torch.equal(reference, shuffled[image_id][0])
        assert one[image_id][1] == image_seed(7, image_id)
    other_seed = run(5, [0, 1, 2, 3, 4], seed=8)
    assert not torch.equal(one["img0"][0], other_seed["img0"][0])


def test_generation_settings_are_named_with_presets_and_unknown_names_fail():
    assert SPEC.resolved_settings() == {"steps": 50, "guidance": 1.0}
    assert SPEC.resolved_settings("upstream") == {"steps": 28, "guidance": 1.0}
    assert SPEC.resolved_settings("upstream", {"guidance": 4.0}) == {"steps": 28, "guidance": 4.0}
    with pytest.raises(ValueError, match="unknown setting"):
        SPEC.resolved_settings(overrides={"temprature": 1.0})
    with pytest.raises(ValueError, match="unknown preset"):
        SPEC.resolved_settings("fast")


def test_shared_components_are_built_once_per_files_device_and_dtype(tmp_path):
    release_components()
    weights = tmp_path / "enc.pth"
    weights.write_bytes(b"x" * 10)
    built = []

    class Component:
        pass

    def build():
        built.append(1)
        return Component()

    a = shared_component("encoder", [weights], "cpu", torch.float32, build)
    b = shared_component("encoder", [str(weights)], "cpu", torch.float32, build)
    c = shared_component("encoder", [weights], "cpu", torch.bfloat16, build)
    assert a is b and a is not c and len(built) == 2
    key = component_key("encoder", [weights], "cpu", torch.float32)
    assert key in loaded_components()
    del a, b
    gc.collect()
    assert key not in loaded_components(), "the last holder gone, the component is freed"
    assert shared_component("encoder", [weights], "cpu", torch.float32, build) is not c and len(built) == 3
    release_components()
    assert loaded_components() == []


def test_a_weight_file_problem_is_a_skip_but_a_bug_is_an_error(monkeypatch):
    golden = shared_path("golden")
    from vision_tokenizers import magvit2 as family

    monkeypatch.setattr(family.Magvit2, "_encode", None)  # unrelated: load must not touch it
    original_init = family.Magvit2.__init__

    def planted_bug(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        raise TypeError("planted bug in the wrapper")

    monkeypatch.setattr(family.Magvit2, "__init__", planted_bug)
    with pytest.raises(TypeError, match="planted bug"):
        vt.load("magvit2_tiny", weights_dir=golden, offline=True)


def test_planted_bug_fails_the_benchmark_run_instead_of_skipping(tmp_path):
    """`pytest bench` on the tiny MAGVIT2 with a bug planted in its wrapper: errors, no skip."""
    plugin = tmp_path / "planted_bug.py"
    plugin.write_text(textwrap.dedent("""
        import vision_tokenizers.magvit2 as family

        def _broken(self, tokens):
            return tokens.float().unsqueeze(1).expand(-1, 3, -1, -1)[:, :, :7]  # wrong shape: a bug, not weights
        family.Magvit2._decode = _broken
    """))
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    env["PYTHONPATH"] = f"{tmp_path}:{REPO}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "-p", "planted_bug", "-k",
         "reconstruction", "--tokenizers", "magvit2_tiny", "--weights-dir", str(shared_path("golden")), "--offline",
         "--num-images", "2", "--report-dir", str(tmp_path / "report")],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode != 0, proc.stdout[-2000:]
    tail = proc.stdout.splitlines()[-1]
    assert ("failed" in tail or "error" in tail) and "skipped" not in tail, proc.stdout[-2000:]
    assert "RuntimeError" in proc.stdout and "reconstruction" in proc.stdout


def test_report_is_rebuilt_from_records_alone(tmp_path):
    """Editing the registry's published numbers after a run does not change the report rebuilt from its JSONL."""
    from vision_tokenizers import registry
    from vision_tokenizers import results as R

    report = tmp_path / "run"
    rec = report / R.RECORDS_FILE
    spec = vt.get_spec("magvit2_256")
    R.append_record(rec, {"type": "run", "options": {}})
    R.append_record(rec, {"type": "tokenizer", "tokenizer": spec.name, "facts": spec.facts(), "settings": {}})
    R.append_record(rec, {"type": "image", "tokenizer": spec.name, "image_id": "a", "dataset": "d",
                          "resolution": 256, "metrics": {"psnr": 20.0, "ssim": 0.5, "mae": 0.1, "rmse": 0.2,
                                                         "bpp": 0.07}})
    R.build_report(report)
    before = {p.name: p.read_text() for p in report.glob("*") if p.suffix in (".md", ".csv")}
    edited = dataclasses.replace(spec, published={k: v + 1.0 for k, v in spec.published.items()})
    shutil.rmtree(report / "grids", ignore_errors=True)
    with registry.REGISTRY.replaced(edited):
        R.build_report(report)
    after = {p.name: p.read_text() for p in report.glob("*") if p.suffix in (".md", ".csv")}
    assert before and before == after
    assert f"{spec.published['psnr']:.2f}" in before["summary.md"]
