"""Text fidelity (TokBench's T-ACC / T-NED with a real OCR model) on a dataset with text boxes: `--dataset textsizes`
or any folder with an annotations.json. Elsewhere, or without vtok-bench[text], a skip with the reason."""

from __future__ import annotations

import pytest


@pytest.mark.text
def test_text_fidelity(request, text_metric, images, tokenizer_name, tokenizer):
    text, reason = text_metric
    if text is None:
        pytest.skip(reason)
    evaluation = request.getfixturevalue("evaluation")  # only now: no reconstruction just to skip
    resolution = request.config.getoption("resolution") or tokenizer.resolution
    annotated = images.annotations.at(resolution)
    for image_id, metrics in evaluation.per_image.items():
        kept, cut = annotated.get(image_id, ((), 0))
        details = evaluation.text.get(image_id)
        assert details is not None and metrics["text_boxes"] == len(kept) == len(details["boxes"]), image_id
        assert details["cut"] == cut, f"{tokenizer_name}/{image_id}: boxes cut by the crop not counted"
        for name in ("text_acc", "text_ned", "text_acc_original", "text_ned_original"):
            assert (name in metrics) == bool(kept) and 0.0 <= metrics.get(name, 0.0) <= 1.0, (image_id, name)
    dataset = evaluation.dataset_metrics
    boxes = sum(len(d["boxes"]) for d in evaluation.text.values())
    assert dataset["text_boxes"] == boxes
    assert dataset["text_boxes_cut"] == sum(annotated.get(i, ((), 0))[1] for i in evaluation.per_image)
    if boxes:
        assert 0.0 <= dataset["text_acc"] <= dataset["text_ned"] <= 1.0 + 1e-12  # an exact read has T-NED 1
