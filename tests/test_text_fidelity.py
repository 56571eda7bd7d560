"""Text fidelity: scoring (TokBench's T-ACC / T-NED), boxes through the ADM crop, annotations, the textsizes pages,
the OCR recognizer (marker `text`) and the report's table, plot and worst-crop grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vision_tokenizers import textsizes
from vision_tokenizers.images import MAX_ASPECT, center_crop_resize
from vision_tokenizers.text_fidelity import (
    TextBox,
    bucket_of,
    buckets,
    crop,
    crop_transform,
    edit_distance,
    map_box,
    map_boxes,
    normalize,
    parse_annotations,
    read_annotations,
    summarize,
    t_acc,
    t_ned,
)

# ------------------------------------------------------------------------------------------------------ scoring


def test_edit_distance_known_answers():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("same", "same") == 0


def test_scores_remove_whitespace_and_ignore_case():
    assert normalize(" Qua ntum\t") == "quantum"
    assert t_acc("Quantum", "Qua ntum") == 1.0  # the recognizer's spurious space does not count
    assert t_acc("Quantum", "qUANTUM") == 1.0 and t_ned("Quantum", "quantum") == 1.0  # case is not the tokenizer's
    assert t_acc("Quantum", "Quantun") == 0.0 and t_ned("Quantum", "QUANTUN") == pytest.approx(1 - 1 / 7)
    # pairs from TokBench's published per-box output (output/ic13.json) with the 1-NED it lists
    assert t_ned("could", "Guail") == 0.0
    assert t_ned("Tiredness", "Treeneas") == pytest.approx(0.6666666666666667)
    assert t_ned("short", "dut") == pytest.approx(0.19999999999999996)
    assert t_ned("abc", "") == 0.0 and t_ned("", "") == 1.0


def test_buckets_follow_tokbench_edges():
    assert [b[0] for b in buckets(512)] == ["<0.01", "0.01-0.02", "0.02-0.03", ">=0.03"]
    assert [b[0] for b in buckets(256)] == ["<0.02", "0.02-0.03", "0.03-0.04", ">=0.04"]
    assert [b[0] for b in buckets(1024)] == ["<0.005", "0.005-0.01", "0.01-0.02", ">=0.02"]
    assert buckets(384) == buckets(512) and buckets(300) == buckets(256)  # nearest on a log scale
    assert bucket_of(6 / 512, 512) == "0.01-0.02" and bucket_of(0.02, 512) == "0.02-0.03"
    assert bucket_of(4 / 512, 512) == "<0.01" and bucket_of(1.0, 512) == ">=0.03"


def test_summarize_means_over_boxes_and_per_bucket():
    rows = [{"ratio": 0.015, "acc": 1, "ned": 1.0, "acc_original": 1, "ned_original": 1.0},
            {"ratio": 0.015, "acc": 0, "ned": 0.5, "acc_original": 1, "ned_original": 1.0},
            {"ratio": 0.05, "acc": 1, "ned": 1.0, "acc_original": 0, "ned_original": 0.8}]
    out = summarize(rows, 512)
    assert out["text_boxes"] == 3 and out["text_acc"] == pytest.approx(2 / 3)
    assert out["text_ned"] == pytest.approx(2.5 / 3) and out["text_ned_original"] == pytest.approx(2.8 / 3)
    assert out["text_boxes@0.01-0.02"] == 2 and out["text_acc@0.01-0.02"] == 0.5
    assert out["text_acc_original@>=0.03"] == 0 and out["text_boxes@0.02-0.03"] == 0
    assert "text_acc@0.02-0.03" not in out  # an empty bucket has a count, no mean


# ------------------------------------------------------------------------------------ boxes through the crop


@pytest.mark.parametrize("size, resolution", [((640, 480), 256), ((1600, 1200), 256), ((1001, 2003), 256),
                                              ((300, 300 * MAX_ASPECT + 600), 64), ((200, 120), 256),
                                              ((512, 512), 512)])
def test_boxes_land_where_prepare_image_puts_their_pixels(size, resolution):
    """A white rectangle drawn at a box: after the benchmark's own crop + resize, its pixels sit in the mapped box."""
    width, height = size
    sx, sy, dx, dy = crop_transform(width, height, resolution)
    target = (0.3 * resolution, 0.35 * resolution, 0.7 * resolution, 0.6 * resolution)
    source = (round((target[0] - dx) / sx), round((target[1] - dy) / sy), round((target[2] - dx) / sx),
              round((target[3] - dy) / sy))
    image = Image.new("RGB", size, "black")
    ImageDraw.Draw(image).rectangle((source[0], source[1], source[2] - 1, source[3] - 1), fill="white")
    mapped = map_box(TextBox("x", source), width, height, resolution)
    assert mapped is not None
    pixels = np.asarray(center_crop_resize(image, resolution))[..., 0] >= 128
    ys, xs = np.nonzero(pixels)
    found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    for got, want in zip(found, mapped.box, strict=True):
        assert abs(got - want) <= 1.0, (found, mapped.box)


def test_boxes_cut_by_the_centre_crop_are_dropped_and_counted():
    boxes = [TextBox("left", (0, 100, 60, 120)), TextBox("middle", (300, 100, 340, 120)),
             TextBox("straddles", (60, 200, 200, 220))]
    kept, cut = map_boxes(boxes, 640, 480, 480)  # the crop keeps x in [80, 560)
    assert cut == 2 and [b.text for b in kept] == ["middle"]
    assert kept[0].box == pytest.approx((220, 100, 260, 120))


def test_crop_takes_the_pixels_a_box_touches():
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    np.testing.assert_array_equal(crop(image, (2.5, 1.2, 5.0, 4.8)), image[1:5, 2:5])
    assert crop(image, (11.8, 9.9, 12.0, 10.0)).shape == (1, 1, 3)  # never empty


# ------------------------------------------------------------------------------------------------ annotations


def test_bad_annotations_get_one_line_each_and_the_rest_is_kept():
    data = {"a.png": [{"text": "good", "box": [1, 2, 30, 12]}, {"text": " ", "box": [1, 2, 3, 4]},
                      {"text": "wide", "box": [10, 10, 200, 20]}, {"text": "bad", "box": [5, 5, 2, 9]},
                      {"text": "short", "box": [1, 2]}, "not a dict"],
            "missing.png": [{"text": "x", "box": [0, 0, 1, 1]}],
            "b.png": {"text": "x"}}
    out = parse_annotations(data, {"a.png": "a", "b.png": "b"}, {"a": (100, 50), "b": (10, 10)})
    assert out.boxes == {"a": [TextBox("good", (1.0, 2.0, 30.0, 12.0))]}
    assert len(out.problems) == 7, out.problems
    joined = "\n".join(out.problems)
    for needle in ("box 1: empty or missing text", "box 3 ('bad'): box must be", "box 4 ('short'): box must be",
                   "box 2 ('wide'): box [10.0, 10.0, 200.0, 20.0] lies outside the 100x50 image",
                   "box 5: expected", "'missing.png' is not an image of this dataset", "'b.png': expected a list"):
        assert needle in joined, needle
    assert parse_annotations([], {}, {}).problems[0].startswith("annotations.json: expected an object")


def test_read_annotations_names_files_by_relative_path_or_unique_name(tmp_path):
    (tmp_path / "sub").mkdir()
    paths = [tmp_path / "one.png", tmp_path / "sub" / "two.png", tmp_path / "sub" / "one.png"]
    for p in paths:
        Image.new("RGB", (40, 20)).save(p)
    assert read_annotations(tmp_path, paths, ["one", "two", "one_png"]) is None  # no file: the metric stays off
    (tmp_path / "annotations.json").write_text(json.dumps({
        "two.png": [{"text": "b", "box": [0, 0, 10, 10]}], "sub/one.png": [{"text": "c", "box": [0, 0, 40, 20]}],
        "one.png": [{"text": "a", "box": [0, 0, 41, 20]}]}))
    out = read_annotations(tmp_path, paths, ["one", "two", "one_png"])
    assert out.boxes == {"two": [TextBox("b", (0, 0, 10, 10))], "one_png": [TextBox("c", (0, 0, 40, 20))]}
    assert out.problems == ["%s: 'one.png' box 0 ('a'): box [0.0, 0.0, 41.0, 20.0] lies outside the 40x20 image "
                            "(boxes are in the original image's pixels); ignored" % (tmp_path / "annotations.json")]
    (tmp_path / "annotations.json").write_text("{not json")
    broken = read_annotations(tmp_path, paths, ["one", "two", "one_png"])
    assert broken.boxes == {} and "unreadable (JSONDecodeError" in broken.problems[0]


# ------------------------------------------------------------------------------------------------- textsizes


def test_textsizes_pages_are_deterministic_and_their_boxes_hold_all_the_ink():
    first = textsizes.render_page(0)
    again = textsizes.render_page(0)
    np.testing.assert_array_equal(np.asarray(first.image), np.asarray(again.image))
    assert first.boxes == again.boxes
    assert textsizes.dataset_sha256((first,)) == textsizes.dataset_sha256((again,))
    pixels = np.asarray(first.image)
    ink = np.any(pixels != np.array(textsizes.PAPERS["paper"], dtype=np.uint8), axis=-1)
    covered = np.zeros_like(ink)
    for box in first.boxes:
        x0, y0, x1, y1 = math.floor(box.box[0]), math.floor(box.box[1]), math.ceil(box.box[2]), math.ceil(box.box[3])
        covered[y0:y1, x0:x1] = True
    assert ink.any() and not (ink & ~covered).any(), "ink outside every annotated box"


def test_textsizes_rows_have_the_listed_heights_inside_the_page():
    pages = textsizes.pages()
    assert len(pages) == len(textsizes.BACKGROUNDS) and len({p.image_id for p in pages}) == len(pages)
    for page in pages:
        assert page.image.size == (textsizes.SIZE, textsizes.SIZE)
        heights = sorted(round(b.height, 6) for b in page.boxes)
        assert heights == sorted(h for h in textsizes.HEIGHTS for _ in range(textsizes.WORDS_PER_ROW))
        assert all(0 <= b.box[0] and 0 <= b.box[1] and b.box[2] <= textsizes.SIZE and b.box[3] <= textsizes.SIZE
                   for b in page.boxes)
        assert len({b.text for b in page.boxes}) == len(page.boxes)  # no word twice on a page
        assert all(b.text in textsizes.WORDS for b in page.boxes)


# ------------------------------------------------------------------------------------------------- recognizer


def test_without_the_ocr_package_the_metric_is_unavailable_with_the_fix(monkeypatch):
    import sys

    from vision_tokenizers.metrics import MetricUnavailable
    from vision_tokenizers.text_fidelity import Recognizer

    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    with pytest.raises(MetricUnavailable, match=r"pip install 'vtok-bench\[text\]'"):
        Recognizer()


@pytest.fixture(scope="module")
def recognizer():
    pytest.importorskip("rapidocr_onnxruntime", reason="the OCR model ships in vtok-bench[text]")
    from vision_tokenizers.text_fidelity import Recognizer

    return Recognizer()


@pytest.mark.text
def test_recognizer_reads_clear_text_and_measure_matches_direct_calls(recognizer):
    """`TextFidelity.measure` reports exactly what rapidocr's recognition stage returns for the same crops."""
    from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer

    from vision_tokenizers.text_fidelity import TextFidelity

    page = textsizes.render_page(0)
    original = np.asarray(page.image)
    reconstruction = original.copy()
    reconstruction[:, ::2] = 255 - reconstruction[:, ::2]  # a damaged copy: other reads
    boxes = [b for b in page.boxes if b.height in (8, 32)][:3]
    metrics, details = TextFidelity(recognizer).measure(original, reconstruction, boxes, cut=1)
    direct = TextRecognizer(_rec_config())  # rapidocr's own recognition stage, called directly
    for box, got in zip(boxes, details["boxes"], strict=True):
        want_original = direct([crop(original, box.box)[..., ::-1].copy()])[0][0][0]
        want = direct([crop(reconstruction, box.box)[..., ::-1].copy()])[0][0][0]
        assert (got["read_original"], got["read"]) == (want_original, want)
        assert got["ned"] == t_ned(box.text, want) and got["acc"] == t_acc(box.text, want)
    assert details["cut"] == 1 and metrics["text_boxes"] == 3
    assert metrics["text_acc_original"] == np.mean([d["acc_original"] for d in details["boxes"]])
    big = next(b for b in page.boxes if b.height == 32)
    assert recognizer.read(crop(original, big.box)) == big.text


def _rec_config() -> dict:
    from pathlib import Path

    import rapidocr_onnxruntime
    from rapidocr_onnxruntime.utils import read_yaml

    root = Path(rapidocr_onnxruntime.__file__).parent
    config = dict(read_yaml(str(root / "config.yaml"))["Rec"])
    config["model_path"] = str(root / config["model_path"])
    return config


# ----------------------------------------------------------------------------------------------------- report


def _text_run(report_dir) -> None:
    """Records of two tokenizers on one textsizes page (reads made up: no OCR needed), with the PNGs saved."""
    from vision_tokenizers.results import append_record

    page = textsizes.render_page(0)
    original = np.asarray(page.image)
    (report_dir / "originals" / "512").mkdir(parents=True)
    page.image.save(report_dir / "originals" / "512" / f"{page.image_id}.png")
    for name, damage in (("good_tok", 0), ("blurry_tok", 1)):
        recon = original.copy()
        if damage:
            recon[::2] = recon[1::2]
        (report_dir / "recon" / name).mkdir(parents=True)
        Image.fromarray(recon).save(report_dir / "recon" / name / f"{page.image_id}.png")
        boxes = []
        for box in page.boxes:
            read = box.text if not damage or box.height >= 12 else box.text[1:]
            boxes.append({"text": box.text, "box": list(box.box), "ratio": box.height / 512, "read": read,
                          "read_original": box.text, "acc": t_acc(box.text, read), "ned": t_ned(box.text, read),
                          "acc_original": 1.0, "ned_original": 1.0})
        metrics = {"psnr": 30.0, "bpp": 1.0, "text_boxes": float(len(boxes)),
                   "text_acc": float(np.mean([b["acc"] for b in boxes]))}
        append_record(report_dir / "records.jsonl", {
            "type": "image", "tokenizer": name, "image_id": page.image_id, "resolution": 512, "metrics": metrics,
            "original": f"originals/512/{page.image_id}.png", "recon": f"recon/{name}/{page.image_id}.png",
            "text": {"boxes": boxes, "cut": 2, "side": 512}})
        append_record(report_dir / "records.jsonl", {
            "type": "dataset", "tokenizer": name, "metrics": {}, "meta": {"text_backend": "made-up reads"}})


def test_report_has_the_height_table_the_plot_and_the_worst_crops(tmp_path):
    from vision_tokenizers.results import build_report

    _text_run(tmp_path)
    files = build_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Text fidelity (OCR)" in summary and "Recognizer: made-up reads." in summary
    assert "| `blurry_tok` | 512 | 0.01–0.02 (5.12–10.2 px) | 8 | 0.0 | " in summary  # 6, 7, 8, 10 px: misread
    assert "| `good_tok` | 512 | **all** | 24 | **100.0** | **100.0** | **100.0** | **100.0** |" in summary
    assert "Boxes cut by the centre crop (left out): `good_tok` 2, `blurry_tok` 2." in summary
    quality = summary.split("## Reconstruction quality")[1].split("##")[0]
    assert "text_acc" not in quality  # means over boxes live in their own section, not as per-image means
    for key, name in (("text_ned_png", "text_ned_vs_height.png"), ("text_worst", "grid_worst_text.png")):
        assert files[key].name == name and files[key].stat().st_size > 0 and f"]({name})" in summary
    grid = Image.open(files["text_worst"])
    assert grid.height > 2 * 8 * 40  # two tokenizers, eight rows each
    csv_head = (tmp_path / "benchmark_results.csv").read_text().splitlines()[0]
    assert "text_acc" in csv_head and "text_boxes" in csv_head


def test_merge_reduces_text_metrics_over_every_box(tmp_path):
    from vision_tokenizers.results import read_records
    from vision_tokenizers.results.merge import merged_dataset_records
    from vision_tokenizers.results.text import text_dataset_metrics

    _text_run(tmp_path)
    records = read_records(tmp_path)
    merged = {r["tokenizer"]: r for r in merged_dataset_records(tmp_path, records)}
    blurry = merged["blurry_tok"]["metrics"]
    assert blurry["text_boxes"] == 24 and blurry["text_boxes_cut"] == 2
    assert blurry["text_acc@0.01-0.02"] == 0 and blurry["text_acc@>=0.03"] == 1
    assert blurry["text_acc"] == pytest.approx(16 / 24)
    assert text_dataset_metrics([{"text": None}], 512) == {}
