"""Text fidelity inside the benchmark, end to end: `pytest bench` on an annotated folder made here (random words on
generated images), its records, CSV and report against the recognizer called directly on the same crops; bad
annotations, boxes cut by the centre crop, the rebuilt report, a run without the OCR package; `--dataset textsizes`'s
cached folder."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.helpers import REPO, shared_path
from tests.test_bench_e2e import run_bench
from vision_tokenizers import textsizes
from vision_tokenizers.results import read_records
from vision_tokenizers.text_fidelity import TextBox, crop, map_boxes, t_acc, t_ned

RESOLUTION = 128
TOKENIZER = "magvit2_tiny"
LETTERS = "abcdefghkmnprstuvwxyzABDEFGHKMNRT23456789"
# (file, width, height, the region the centre crop at 128 px keeps): wide loses 32 px each side, tall 16 px top and
# bottom
IMAGES = (("wide.png", 192, 128, (32, 0, 160, 128)), ("square.png", 128, 128, (0, 0, 128, 128)),
          ("tall.png", 128, 160, (0, 16, 128, 144)))


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 5)))


def make_annotated_folder(folder) -> tuple[dict, int, list[str]]:
    """Random words (seeded) at 14-20 px on noisy pastel images, inside the region the crop keeps, their boxes in
    annotations.json, one word the crop cuts, and three bad entries. Returns (the good annotations, how many boxes
    the centre crop cuts, the bad entries' lines)."""
    rng = random.Random(1234)
    noise = np.random.default_rng(1234)
    folder.mkdir()
    good: dict[str, list[dict]] = {}
    cut = 0
    for name, width, height, (kx0, ky0, kx1, ky1) in IMAGES:
        ground = np.array([rng.randint(200, 250) for _ in range(3)], dtype=np.float64)
        pixels = np.clip(ground + noise.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        boxes = []
        y = ky0 + 4
        for _ in range(40):  # words until the kept region is full (a word too wide is drawn again shorter)
            font = ImageFont.truetype(str(textsizes.font_path()), size=rng.randint(14, 20))
            word, x = _word(rng), kx0 + 4 + rng.randint(0, 6)
            left, top, right, bottom = draw.textbbox((x, y), word, font=font)
            if bottom + 2 > ky1:
                break
            if right + 2 > kx1:
                continue
            draw.text((x, y), word, font=font, fill=tuple(rng.randint(0, 60) for _ in range(3)))
            boxes.append({"text": word, "box": [left - 2, top - 2, right + 2, bottom + 2]})
            y = bottom + 6
        if name == "wide.png":  # a word in the 32 px strip the crop removes
            font = ImageFont.truetype(str(textsizes.font_path()), size=16)
            left, top, right, bottom = draw.textbbox((1, height - 22), "cut", font=font)
            draw.text((1, height - 22), "cut", font=font, fill=(0, 0, 0))
            boxes.append({"text": "cut", "box": [left, top, right, bottom]})
            cut += 1
        image.save(folder / name)
        good[name] = boxes
    data = {name: list(boxes) for name, boxes in good.items()}
    data["square.png"] = [*data["square.png"], {"text": "  ", "box": [1, 1, 20, 10]},  # empty text
                          {"text": "far", "box": [100, 100, 140, 120]}]  # outside the 128 x 128 image
    data["ghost.png"] = [{"text": "boo", "box": [0, 0, 10, 10]}]  # no such image
    (folder / "annotations.json").write_text(json.dumps(data))
    first_bad = len(good["square.png"])
    bad = [f"'square.png' box {first_bad}: empty or missing text",
           f"'square.png' box {first_bad + 1} ('far'): box [100.0, 100.0, 140.0, 120.0] lies outside the 128x128 image "
           "(boxes are in the original image's pixels); ignored",
           "'ghost.png' is not an image of this dataset"]
    return good, cut, bad


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    pytest.importorskip("rapidocr_onnxruntime", reason="the OCR model ships in vtok-bench[text]")
    tmp = tmp_path_factory.mktemp("text")
    good, cut, bad = make_annotated_folder(tmp / "images")
    report = tmp / "report"
    proc = run_bench("--tokenizers", TOKENIZER, "--dataset", str(tmp / "images"), "--resolution", str(RESOLUTION),
                     "--weights-dir", str(shared_path("golden")), "--offline", "--save-images", "-1",
                     "--report-dir", str(report), "-m", "not speed", "--workers", "0")
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc, report, tmp / "images", good, cut, bad


def _direct_reader():
    """rapidocr's own recognition stage, called directly (not through vision_tokenizers.text_fidelity)."""
    from pathlib import Path

    import rapidocr_onnxruntime
    from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
    from rapidocr_onnxruntime.utils import read_yaml

    root = Path(rapidocr_onnxruntime.__file__).parent
    config = dict(read_yaml(str(root / "config.yaml"))["Rec"])
    config["model_path"] = str(root / config["model_path"])
    recognizer = TextRecognizer(config)
    return lambda rgb: recognizer([np.ascontiguousarray(rgb[..., ::-1])])[0][0][0]


@pytest.mark.text
def test_per_image_text_results_are_the_recognizers_reads_of_the_same_crops(text_run):
    _, report, folder, good, _, _ = text_run
    read = _direct_reader()
    rows = {r["image_id"]: r for r in read_records(report) if r["type"] == "image"}
    csv_rows = {r["image_id"]: r for r in csv.DictReader((report / "benchmark_results.csv").open())}
    assert set(rows) == set(csv_rows) == {name[:-4] for name, *_ in IMAGES}
    every_box = []
    for name, width, height, _ in IMAGES:
        image_id = name[:-4]
        row = rows[image_id]
        original = np.asarray(Image.open(report / row["original"]).convert("RGB"))
        recon = np.asarray(Image.open(report / row["recon"]).convert("RGB"))
        kept, cut = map_boxes([TextBox(b["text"], tuple(b["box"])) for b in good[name]], width, height, RESOLUTION)
        details = row["text"]["boxes"]
        assert [d["text"] for d in details] == [b.text for b in kept] and row["text"]["cut"] == cut
        for box, got in zip(kept, details, strict=True):
            want, want_original = read(crop(recon, box.box)), read(crop(original, box.box))
            assert (got["read"], got["read_original"]) == (want, want_original), box.text
            assert (got["acc"], got["ned"]) == (t_acc(box.text, want), t_ned(box.text, want))
            assert got["ned_original"] == t_ned(box.text, want_original)
            every_box.append(got)
        metrics = row["metrics"]
        assert metrics["text_boxes"] == len(kept) == float(csv_rows[image_id]["text_boxes"])
        for key, column in (("ned", "text_ned"), ("acc", "text_acc"), ("ned_original", "text_ned_original")):
            mean = float(np.mean([d[key] for d in details]))
            assert metrics[column] == pytest.approx(mean, abs=1e-12)
            assert float(csv_rows[image_id][column]) == pytest.approx(mean, abs=1e-9)
    assert sum(d["acc_original"] for d in every_box) >= len(every_box) // 2, "the OCR cannot read the originals"
    dataset = next(r for r in read_records(report) if r["type"] == "dataset")["metrics"]
    assert dataset["text_boxes"] == len(every_box)
    assert dataset["text_ned"] == pytest.approx(np.mean([d["ned"] for d in every_box]), abs=1e-12)
    assert dataset["text_acc_original"] == pytest.approx(np.mean([d["acc_original"] for d in every_box]), abs=1e-12)
    buckets = [k for k in dataset if k.startswith("text_boxes@")]
    assert sum(dataset[k] for k in buckets) == len(every_box) and len(buckets) == 4
    from vision_tokenizers.results.merge import merged_dataset_records

    merged = merged_dataset_records(report, read_records(report))[0]["metrics"]  # what merges and ranks reduce
    assert {k: v for k, v in merged.items() if k.startswith("text_")} == \
        {k: v for k, v in dataset.items() if k.startswith("text_")}


@pytest.mark.text
def test_bad_annotations_are_one_line_each_and_the_run_goes_on(text_run):
    proc, report, folder, good, _, bad = text_run
    out = proc.stdout
    summary = (report / "summary.md").read_text()
    for phrase in bad:
        assert out.count(phrase) == 1, (phrase, out[-3000:])
        assert summary.count(phrase) == 1, phrase
    rows = [r for r in read_records(report) if r["type"] == "image"]
    square = next(r for r in rows if r["image_id"] == "square")
    assert square["metrics"]["text_boxes"] == len(good["square.png"])  # its good boxes measured, the bad ones not


@pytest.mark.text
def test_boxes_cut_by_the_crop_are_counted(text_run):
    _, report, _, _, cut, _ = text_run
    assert cut == 1
    dataset = next(r for r in read_records(report) if r["type"] == "dataset")["metrics"]
    assert dataset["text_boxes_cut"] == cut
    assert f"Boxes cut by the centre crop (left out): `{TOKENIZER}` {cut}." in (report / "summary.md").read_text()


def _text_section(summary: str) -> str:
    return summary.split("## Text fidelity (OCR)")[1].split("\n## ")[0]


@pytest.mark.text
def test_report_sections_exist_and_python_m_reports_rebuilds_them(text_run):
    proc, report, _, _, _, _ = text_run
    summary = (report / "summary.md").read_text()
    section = _text_section(summary)
    dataset = next(r for r in read_records(report) if r["type"] == "dataset")["metrics"]
    cells = [f"{100 * dataset[k]:.1f}" for k in ("text_acc", "text_ned", "text_acc_original", "text_ned_original")]
    boxes = int(dataset["text_boxes"])
    assert f"| `{TOKENIZER}` | {RESOLUTION} | **all** | {boxes} | " + " | ".join(f"**{c}**" for c in cells) + " |" \
        in section and "Originals T-NED" in section
    terminal = proc.stdout.split("= vtok summary =")[1]  # the same numbers at the end of the run
    assert "vtok: text fidelity (OCR" in terminal
    assert [TOKENIZER, str(RESOLUTION), "all", str(boxes), *cells] in [line.split() for line in terminal.splitlines()]
    assert "](text_ned_vs_height.png)" in section and "](grid_worst_text.png)" in section
    before = {name: (report / name).read_bytes() for name in ("text_ned_vs_height.png", "grid_worst_text.png")}
    for name in ("summary.md", *before):
        (report / name).unlink()
    proc = subprocess.run([sys.executable, "-m", "reports", str(report)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _text_section((report / "summary.md").read_text()) == section
    assert (report / "grid_worst_text.png").read_bytes() == before["grid_worst_text.png"]  # the same crops and reads
    assert (report / "text_ned_vs_height.png").stat().st_size > 0


def test_without_the_ocr_package_text_fidelity_is_a_skip_with_its_reason(tmp_path):
    """The OCR package hidden from the child (tests/no_ocr_plugin.py): the text test skips with the fix, the report
    lists it, the other metrics do not change."""
    make_annotated_folder(tmp_path / "images")
    report = tmp_path / "report"
    proc = run_bench("-p", "tests.no_ocr_plugin", "--tokenizers", TOKENIZER, "--dataset", str(tmp_path / "images"),
                     "--resolution", str(RESOLUTION), "--weights-dir", str(shared_path("golden")), "--offline",
                     "--report-dir", str(report), "-k", "test_text", "--workers", "0")
    assert proc.returncode == 0, proc.stdout[-3000:]
    reason = "text fidelity needs the OCR package rapidocr-onnxruntime (PP-OCRv4 models inside its wheel): pip " \
             "install 'vtok-bench[text]'"
    assert "SKIPPED [1] bench/test_text.py" in proc.stdout and reason in proc.stdout
    summary = (report / "summary.md").read_text()
    assert f"- all tokenizers, metric:text: {reason}" in summary and "## Text fidelity" not in summary


def test_textsizes_is_a_cached_annotated_folder(tmp_path, monkeypatch):
    from vision_tokenizers.datasets import open_dataset

    monkeypatch.setenv("VTOK_CACHE", str(tmp_path))
    images = open_dataset("textsizes")
    folder = tmp_path / "textsizes" / textsizes.dataset_sha256()[:16]
    assert images.name == "textsizes" and [p.parent for p in images.paths] == [folder] * len(textsizes.BACKGROUNDS)
    assert images.ids == [p.image_id for p in textsizes.pages()]
    expected = textsizes.annotations()
    assert images.annotations.boxes == expected.boxes and images.annotations.sizes == expected.sizes
    assert images.protocol_fields["textsizes_sha256"] == textsizes.dataset_sha256()
    assert images.protocol_fields["annotations"]["sha256"] == expected.sha256
    stamp = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert open_dataset("textsizes").file_list_sha256 == images.file_list_sha256
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp  # reused, not written again
    Image.new("RGB", (512, 512)).save(images.paths[0])  # a damaged cache is rendered again
    again = open_dataset("textsizes", num_images=2)
    np.testing.assert_array_equal(np.asarray(Image.open(images.paths[0]).convert("RGB")),
                                  np.asarray(textsizes.pages()[0].image))
    assert set(again.annotations.boxes) == set(images.ids[:2])
    assert not [p for p in (tmp_path / "textsizes").iterdir() if p.name.startswith(".")]  # no temporary folder left
