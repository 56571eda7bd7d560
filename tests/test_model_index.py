"""`python -m reports DIR --model-index OUT`: one Hugging Face model-index block per tokenizer, read back by
huggingface_hub with report.json's numbers, no entry for a skipped metric, a safe file name that keeps the real name
inside. Model-free: the report directory is written with the Recorder."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCardData
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from reports.__main__ import main as reports_main
from reports.plugin import Recorder
from tests.test_protocol import _protocol
from vision_tokenizers.results.model_index import model_index_filename

VAE, SANA, ABSENT = "diffusers:./my_vae", "tatok_sana_512@steps=28", "magvit2_256"


def _report_dir(d: Path) -> str:
    """Two measured tokenizers (one with every metric, one without LPIPS and rFID) and one that was not run."""
    rec = Recorder(d, run={"type": "run", "options": {"dtype": "fp32"}})
    pid = rec.protocol(_protocol())
    rec.tokenizer(VAE, {"kind": "continuous"}, weights={"vae.safetensors": {"sha256": "ab" * 32}})
    rec.tokenizer(SANA, {"kind": "discrete"}, settings={"steps": 28}, weights={"m.pt": {"sha256": "cd" * 32}})
    for i, image_id in enumerate(("a", "b", "c")):
        rec.image(VAE, image_id, {"psnr": 28.0 + i / 3, "ssim": 0.8 + i / 50, "lpips": 0.1 - i / 100},
                  dataset="ds", resolution=256)
        rec.image(SANA, image_id, {"psnr": 18.0 + i / 7, "ssim": 0.4 + i / 70}, dataset="ds", resolution=512)
    rec.dataset(VAE, {"fid": 12.25, "kid": 0.0125, "kid_std": 0.002},
                meta={"n": 3, "fid_n": 3, "fid_backend": "torch-fidelity", "kid_subset_size": 3, "kid_subsets": 1})
    rec.skip(SANA, "metric:lpips", "AlexNet weights not in cache and --offline")
    rec.skip(SANA, "metric:fid", "Inception weights not in cache and --offline")
    rec.skip(ABSENT, "tokenizer", "weights missing: put imagenet_256_L.ckpt in model_weights/magvit2/")
    return pid


def test_model_index_export_loads_back_with_huggingface_hub_and_carries_report_json_numbers(tmp_path: Path,
                                                                                          capsys):
    pid = _report_dir(tmp_path / "run")
    out = tmp_path / "model_index"
    assert reports_main([str(tmp_path / "run"), "--model-index", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"model-index {ABSENT}: not written: not run (weights missing" in printed
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(model_index_filename(n) for n in (VAE, SANA))
    assert all(set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
               for name in files) and model_index_filename("magvit2_256") == "magvit2_256.yaml"

    expected = {VAE: {"psnr": report["tokenizers"][VAE]["metrics"]["psnr"]["mean"],
                      "ssim": report["tokenizers"][VAE]["metrics"]["ssim"]["mean"],
                      "lpips": report["tokenizers"][VAE]["metrics"]["lpips"]["mean"],
                      "rfid": report["tokenizers"][VAE]["dataset_metrics"]["fid"],
                      "kid": report["tokenizers"][VAE]["dataset_metrics"]["kid"]},
                SANA: {"psnr": report["tokenizers"][SANA]["metrics"]["psnr"]["mean"],
                       "ssim": report["tokenizers"][SANA]["metrics"]["ssim"]["mean"]}}
    for name, resolution in ((VAE, 256), (SANA, 512)):
        meta = metadata_load(out / model_index_filename(name))
        card = ModelCardData(**meta)
        model_name, results = model_index_to_eval_results(meta["model-index"])
        assert model_name == card.model_name == name, "the real name inside, whatever the file is called"
        assert {r.metric_type: r.metric_value for r in card.eval_results} == expected[name], \
            "report.json's numbers, bit for bit; a skipped metric has no entry"
        assert [r.metric_name for r in results] == [
            {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "rfid": "rFID", "kid": "KID"}[r.metric_type]
            for r in results]
        first = results[0]
        assert (first.task_type, first.task_name) == ("image-to-image", "Image reconstruction")
        assert (first.dataset_type, first.dataset_name, first.dataset_split) == ("ds", "ds", "all")
        assert first.dataset_config == f"{resolution}px-protocol-{pid}"
        assert first.dataset_args["resolution"] == resolution and first.dataset_args["protocol"] == pid
        assert first.dataset_args["images"] == 3 and first.dataset_args["file_list_sha256"] == "f" * 64
        psnr = next(r for r in results if r.metric_type == "psnr")
        stats = report["tokenizers"][name]["metrics"]["psnr"]
        assert psnr.metric_args["n"] == 3 and psnr.metric_args["ci95"] == [stats["ci_low"], stats["ci_high"]]
    kid = next(r for r in ModelCardData(**metadata_load(out / model_index_filename(VAE))).eval_results
               if r.metric_type == "kid")
    assert kid.metric_args == {"aggregate": "over the image set", "n": 3, "std": 0.002, "subset_size": 3,
                               "subsets": 1, "backend": "torch-fidelity"}

    # exporting again replaces the files (no second header, no leftovers)
    assert reports_main([str(tmp_path / "run"), "--model-index", str(out)]) == 0
    assert (out / model_index_filename(VAE)).read_text().count("model-index:") == 1


def test_model_index_file_names_are_safe_and_distinct():
    names = ["diffusers:./my_vae", "diffusers/./my_vae", "diffusers:black-forest-labs/FLUX.1-dev#vae", "..", ".", "a b",
             "a_b", "tatok_sana_512@steps=28", "tatok_sana_512@steps=50"]
    files = [model_index_filename(n) for n in names]
    assert len(set(files)) == len(names), "names that differ never share a file"
    for file in files:
        assert "/" not in file and ":" not in file and not file.startswith(".") and file.endswith(".yaml")
    assert model_index_filename("a_b") == "a_b.yaml", "a safe name is kept as it is"
