"""Heatmaps put each value at its head; PNG twins are drawn from the same numbers."""

from __future__ import annotations

import pandas as pd

from headscope.report.figures import head_heatmap, head_task_heatmap


def test_head_heatmap_places_values_at_layer_and_head(tmp_path):
    table = pd.DataFrame({"layer": [0, 1, 2], "head": [3, 0, 1], "score": [0.25, 0.5, 1.0]})
    heatmap = head_heatmap("h", "copy", table, "score", (3, 4))
    assert heatmap.z == [[None, None, None, 0.25], [0.5, None, None, None], [None, 1.0, None, None]]
    assert heatmap.cells[2][1] == "head 2.1"
    figure = heatmap.plotly()
    assert list(figure.data[0].customdata[0]) == ["head 0.0", "head 0.1", "head 0.2", "head 0.3"]
    assert "%{customdata}" in figure.data[0].hovertemplate
    assert heatmap.png(tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_head_task_heatmap_rows_are_heads_columns_tasks():
    table = pd.DataFrame(
        {"task": ["a", "b", "a"], "layer": [0, 0, 1], "head": [1, 1, 0], "share": [1.0, 0.5, 0.2]}
    )
    heatmap = head_task_heatmap("c", "share", table, "share", ["a", "b"])
    assert heatmap.y == ["0.1", "1.0"]
    assert heatmap.z == [[1.0, 0.5], [0.2, None]]
