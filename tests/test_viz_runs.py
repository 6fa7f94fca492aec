"""Training runs compared: one line per run of a metric taken from the training logs."""
from __future__ import annotations

import numpy as np
import pytest

from ltpa import viz

LOGS = {
    "a": [{"epoch": 1, "test_acc": 0.5, "train_acc": 0.4, "lr": 0.1, "entropy": {"stage3": 0.9}},
          {"epoch": 2, "test_acc": None, "train_acc": 0.6, "lr": 0.05, "entropy": {}},
          {"epoch": 3, "test_acc": 0.9, "train_acc": 0.8, "lr": 0.0, "entropy": {"stage3": 0.7}}],
    "b": [{"epoch": 1, "test_acc": 0.6, "train_acc": 0.5, "lr": 0.2,
           "entropy": {"layer7": 1.0, "stage3": 0.8}}],
}


def values(trace) -> list:
    return [None if v is None else float(v) for v in trace.y]


def test_metric_names_add_every_logged_attention_stage() -> None:
    assert viz.run_metric_names(LOGS) == list(viz.RUN_METRICS) + [
        viz.ENTROPY_METRIC + "stage3", viz.ENTROPY_METRIC + "layer7"]
    assert viz.run_metric_names({"plain": [{"epoch": 1, "test_acc": 0.5}]}) == list(viz.RUN_METRICS)


def test_each_run_is_one_line_of_the_metric_with_gaps_where_it_is_missing() -> None:
    figure = viz.compare_runs(LOGS, "test error (%)")
    assert [t.name for t in figure.data] == ["a", "b"]
    a, b = figure.data
    assert list(a.x) == [1, 2, 3]
    shown = values(a)
    assert shown[1] is None and np.allclose([shown[0], shown[2]], [50.0, 10.0])
    assert values(b) == pytest.approx([40.0])
    assert values(viz.compare_runs(LOGS, "learning rate").data[0]) == pytest.approx([0.1, 0.05, 0.0])
    entropy = viz.compare_runs(LOGS, viz.ENTROPY_METRIC + "layer7").data
    assert values(entropy[0]) == [None, None, None] and values(entropy[1]) == pytest.approx([1.0])
    assert figure.layout.yaxis.title.text == "test error (%)" and figure.layout.yaxis.type == "log"
    assert viz.compare_runs(LOGS, "learning rate").layout.yaxis.type == "linear"


def test_an_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        viz.compare_runs(LOGS, "accuracy")
