"""Plug-ins, used exactly as a third party would: the README's `docs/my_tokenizer.py` through `pytest bench` and
`vtok run`, a package installed with an entry point and found with no flag, broken plug-ins as one usage line,
duplicate names naming both origins, and a plug-in's code identity in its config id."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vision_tokenizers as vt
from tests.helpers import REPO, shared_path
from vision_tokenizers import plugins
from vision_tokenizers import results as R
from vision_tokenizers.registry import REGISTRY

EXAMPLE = REPO / "docs" / "my_tokenizer.py"
VTOK = Path(sys.executable).with_name("vtok")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no pytest/xdist or vtok variables of the running suite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VTOK_"))}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=600)


def bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "--benchmark-disable", *args],
               REPO, **env)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("000000000785.jpg", "000000014439.jpg", "000000040083.jpg"):
        (folder / name).write_bytes(shared_path("images", "coco_val2017", name).read_bytes())
    return folder


def psnr_of_pngs(original: Path, reconstruction: Path) -> float:
    a = np.asarray(Image.open(original).convert("RGB"), dtype=np.float64) / 255
    b = np.asarray(Image.open(reconstruction).convert("RGB"), dtype=np.float64) / 255
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_the_readme_plugin_runs_through_pytest_bench_and_its_psnr_is_what_numpy_gets_from_the_pngs(photos, tmp_path):
    report = tmp_path / "report"
    proc = bench("--plugin", "docs/my_tokenizer.py", "--tokenizers", "box4_256", "--dataset", str(photos),
                 "--report-dir", str(report), "--offline", "-k", "box4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = list(csv.DictReader((report / "benchmark_results.csv").open()))
    assert {r["tokenizer"] for r in rows} == {"box4_256"} and len(rows) == 3
    for row in rows:
        original = report / "originals" / "256" / f"{row['image_id']}.png"
        if not original.is_file():  # the recorder's layout: one folder of originals per resolution
            original, = report.glob(f"originals/**/{row['image_id']}.png")
        recon = report / "recon" / "box4_256" / f"{row['image_id']}.png"
        assert float(row["psnr"]) == pytest.approx(psnr_of_pngs(original, recon), abs=1e-9)
        assert float(row["bpp"]) == pytest.approx(3 * 64 * 64 * 8 / 256**2)
    summary = (report / "summary.md").read_text()
    assert "box4_256" in summary


def test_vtok_run_and_list_take_a_plugin_file_from_outside_the_repo(photos, tmp_path):
    plugin = tmp_path / "elsewhere" / "my_tokenizer.py"
    plugin.parent.mkdir()
    plugin.write_text(EXAMPLE.read_text())
    listing = run([str(VTOK), "list", "--plugin", str(plugin)], tmp_path)
    assert listing.returncode == 0, listing.stderr
    line, = [ln for ln in listing.stdout.splitlines() if ln.startswith("box4_256")]
    assert f"plug-in {plugin}" in line
    out = tmp_path / "out"
    proc = run([str(VTOK), "run", "--plugin", str(plugin), "--model", "box4_256", "--input", str(photos),
                "--output", str(out), "--no-lpips"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "benchmark_results.csv").open()))
    assert len(rows) == 3 and all(float(r["psnr"]) > 15 for r in rows)


def test_vtok_plugins_env_var_is_read_like_the_flag(photos, tmp_path):
    proc = run([str(VTOK), "list"], tmp_path, VTOK_PLUGINS=str(EXAMPLE))
    assert proc.returncode == 0 and "box4_256" in proc.stdout, proc.stderr


def write_package(root: Path) -> Path:
    """A tiny installable package with two entry points: a module whose import registers, and a callable."""
    pkg = root / "vtok_box_plugin"
    pkg.mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "vtok-box-plugin"
        version = "0.3.0"

        [project.entry-points."vtok.tokenizers"]
        box_module = "vtok_box_plugin.module_registers"
        box_callable = "vtok_box_plugin:register_more"
        """))
    body = EXAMPLE.read_text()
    (pkg / "module_registers.py").write_text(body.replace("box4_256", "box4_ep_256"))
    (pkg / "__init__.py").write_text(textwrap.dedent("""\
        def register_more():
            import torch
            import torch.nn.functional as F
            from vision_tokenizers import BaseTokenizer, TokenizerSpec, register_tokenizer

            class Box2(BaseTokenizer):
                def _encode(self, pixels):
                    return (F.avg_pool2d(pixels, 2) * 255).round().to(torch.uint8)

                def _decode(self, tokens):
                    return F.interpolate(tokens.float() / 255, scale_factor=2, mode="nearest")

            register_tokenizer(
                TokenizerSpec(name="box2_ep_128", family="box2", resolution=128, kind="discrete",
                              token_shape=(3, 64, 64), bits_per_token=8, codebook_size=256),
                build=lambda spec, files, device, dtype: Box2(spec, device, dtype))
        """))
    return root


def test_an_installed_package_is_found_through_its_entry_points_with_no_flag(photos, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--no-build-isolation", "--target", str(target), str(write_package(tmp_path / "src"))],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    listing = run([str(VTOK), "list"], tmp_path, PYTHONPATH=str(target))
    assert listing.returncode == 0, listing.stderr
    lines = {ln.split()[0]: ln for ln in listing.stdout.splitlines() if ln.strip()}
    assert "plug-in box_module = vtok_box_plugin.module_registers" in lines["box4_ep_256"]
    assert "plug-in box_callable = vtok_box_plugin:register_more" in lines["box2_ep_128"]
    report = tmp_path / "report"
    proc = bench("--tokenizers", "box2_ep_128", "--dataset", str(photos), "--report-dir", str(report), "--offline",
                 PYTHONPATH=str(target))
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = list(csv.DictReader((report / "benchmark_results.csv").open()))
    assert {r["resolution"] for r in rows} == {"128"} and len(rows) == 3
    tokenizer_record = next(r for r in R.read_records(report / "records.jsonl")
                            if r["type"] == "tokenizer")
    assert tokenizer_record["code"] == {"module": "vtok_box_plugin", "package": "vtok-box-plugin",
                                        "version": "0.3.0", "sha256": tokenizer_record["code"]["sha256"]}


@pytest.mark.parametrize("front_end", ["pytest bench", "vtok run", "demo"])
def test_a_plugin_that_fails_to_import_is_one_usage_line_before_anything_runs(tmp_path, photos, front_end):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("import torch\nraise RuntimeError('the checkpoint format changed')\n")
    if front_end == "pytest bench":
        proc = bench("--plugin", str(broken), "--tokenizers", "magvit2_tiny", "--report-dir", str(tmp_path / "r"))
        assert proc.returncode == 4  # pytest's usage error
        text = proc.stderr
    else:
        command = [str(VTOK), "run", "--plugin", str(broken), "-m", "box4_256", "-i", str(photos), "-o",
                   str(tmp_path / "o")] if front_end == "vtok run" else \
            [sys.executable, "-m", "vision_tokenizers.demo", "--plugin", str(broken)]
        proc = run(command, tmp_path)
        assert proc.returncode == 2
        text = proc.stderr
    expected = f"plug-in {broken} failed to load: RuntimeError: the checkpoint format changed"
    assert [ln for ln in text.splitlines() if expected in ln], text[-2000:]
    assert "Traceback" not in text and not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


def test_registering_a_name_twice_names_both_origins(tmp_path):
    first, second = tmp_path / "first_plugin.py", tmp_path / "second_plugin.py"
    first.write_text(EXAMPLE.read_text().replace("box4_256", "box4_twice"))
    second.write_text(EXAMPLE.read_text().replace("box4_256", "box4_twice"))
    try:
        plugins.load_plugin(str(first))
        plugins.load_plugin(str(first))  # the same file again: loaded once, no error
        with pytest.raises(vt.PluginError) as info:
            plugins.load_plugin(str(second))
        message = str(info.value)
        assert "'box4_twice' is registered twice" in message
        assert f"by plug-in {first}" in message and f"by plug-in {second}" in message
        with pytest.raises(vt.RegistrationError, match="by built-in .vision_tokenizers.builtin. and by plug-in"):
            vt.register_tokenizer(vt.get_spec("magvit2_tiny"), "vision_tokenizers.magvit2:build")
    finally:
        REGISTRY._entries.pop("box4_twice", None)


def test_a_plugin_tokenizer_loads_its_weight_files_like_a_builtin_and_its_code_is_in_its_identity(tmp_path):
    (tmp_path / "weights" / "gain").mkdir(parents=True)
    torch.save({"gain": torch.tensor(0.5)}, tmp_path / "weights" / "gain" / "gain.pt")
    plugin = tmp_path / "gain_plugin.py"
    plugin.write_text(textwrap.dedent("""\
        import torch
        from vision_tokenizers import BaseTokenizer, TokenizerSpec, WeightFile, register_tokenizer

        class Gain(BaseTokenizer):
            def __init__(self, spec, device, dtype, gain):
                super().__init__(spec, device, dtype)
                self.gain = gain
            def _encode(self, pixels):
                return pixels * self.gain
            def _decode(self, tokens):
                return tokens / self.gain

        def build(spec, files, device, dtype):
            gain = torch.load(files["gain.pt"], weights_only=True)["gain"]
            return Gain(spec, device, dtype, gain)

        register_tokenizer(
            TokenizerSpec(name="gain_32", family="gain", resolution=32, kind="continuous", token_shape=(3, 32, 32),
                          bits_per_token=32, weights=(WeightFile("gain.pt", local_dir="gain", repo_id="me/gain"),)),
            build=build)
        """))
    try:
        plugins.load_plugin(str(plugin))
        tok = vt.load("gain_32", weights_dir=tmp_path / "weights", offline=True)
        assert tok.weight_files == {"gain.pt": str(tmp_path / "weights" / "gain" / "gain.pt")}
        x = torch.rand(1, 3, 32, 32)
        torch.testing.assert_close(tok.encode(x), x * 0.5)
        assert tok.code["sha256"] and tok.code["module"].startswith("vtok_plugin_gain_plugin")
        with pytest.raises(vt.WeightsUnavailable, match="gain.pt"):
            vt.load("gain_32", weights_dir=tmp_path / "empty", offline=True)
        config = R.config_id({}, {}, None, tok.code)
        assert config != R.config_id({}, {}, None, {**tok.code, "sha256": "0" * 64}), \
            "an edited plug-in file is another config: its old rows are not resumed"
        assert R.config_id({}, {}, None) == R.config_id({}, {}, None, None)
    finally:
        REGISTRY._entries.pop("gain_32", None)


def test_vtok_list_shows_at_least_22_real_tokenizers_each_with_its_origin(tmp_path):
    proc = run([str(VTOK), "list", "--weights-dir", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines()[1:] if ln.strip() and not ln.startswith("weights folder")]
    assert len(rows) == len(vt.list_tokenizers()) >= 22
    assert all("[test]" not in ln and ("missing (from hf://" in ln or "missing (from https://" in ln) for ln in rows)
    assert all("built-in" in ln for ln in rows)
