"""CI quality gates from --thresholds: each bound is one test that fails naming tokenizer, metric, value and bound."""

from __future__ import annotations

import pytest

from reports.distributed import per_rank_reason


def test_threshold(tokenizer_name, gate, request):
    reason = per_rank_reason(request.config)
    if reason:  # a gate on one shard's numbers would pass or fail on the wrong images
        pytest.skip(f"{gate.tokenizer}: {gate.key} not checked: {reason}")
    try:
        evaluation = request.getfixturevalue("evaluation")
    except pytest.skip.Exception as exc:  # a gate that cannot be evaluated must not pass silently
        pytest.fail(f"{gate.tokenizer}: {gate.key} not checked: {exc.msg}")
    if gate.metric in evaluation.skipped:
        pytest.fail(f"{gate.tokenizer}: {gate.key} not checked: {evaluation.skipped[gate.metric]}")
    if gate.metric in evaluation.dataset_metrics:
        value = evaluation.dataset_metrics[gate.metric]
    elif evaluation.values(gate.metric):
        value = evaluation.mean(gate.metric)
    else:
        pytest.fail(f"{gate.tokenizer}: {gate.key} names unknown metric {gate.metric!r}")
    message = gate.check(value)
    if message:
        pytest.fail(message, pytrace=False)
