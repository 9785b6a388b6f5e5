"""Heatmaps put each value at its head; PNG twins are drawn from the same numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from headscope.report.figures import Heatmap, head_heatmap, head_task_heatmap, interval_notes
from headscope.report.html import spec_json
from headscope.report.plotly_json import plotly_white
from tests.report.plotly_reference import heatmap_figure, page_json


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


def test_head_heatmap_hover_shows_each_heads_interval_where_the_table_has_one():
    table = pd.DataFrame(
        {
            "layer": [0, 0],
            "head": [0, 1],
            "score": [0.25, 0.5],
            "n": [40, 40],
            "ci_low": [0.125, float("nan")],
            "ci_high": [0.375, float("nan")],
            "ci_kind": ["cluster-bootstrap", "wilson"],
        }
    )
    heatmap = head_heatmap("h", "copy", table, "score", (1, 2))
    assert heatmap.cells[0] == ["head 0.0 (95% CI 0.125 to 0.375, n 40, cluster-bootstrap)", "head 0.1"]
    old_run = head_heatmap("h", "copy", table.drop(columns=["ci_low", "ci_high"]), "score", (1, 2))
    assert old_run.cells[0] == ["head 0.0", "head 0.1"]  # a table saved before intervals
    effect = table.assign(effect=[-1.5, 0.0])
    marks = {(0, 0): ("≈", "(estimate)")}
    notes = interval_notes(effect, "logit difference change", "effect")
    drawn = head_heatmap(
        "k", "knockout", effect.assign(effect=[-20.0, 0.0]), "effect", (1, 2), True, "", marks, notes
    )
    assert drawn.cells[0][0] == (
        "head 0.0 (estimate) (logit difference change -1.500, 95% CI 0.125 to 0.375, n 40, cluster-bootstrap)"
    )
    assert (
        head_heatmap("d", "x", table.rename(columns={"score": "other"}), "other", (1, 2)).cells[0][0]
        == "head 0.0"
    )


def test_interval_notes_read_named_bounds_of_a_wide_table():
    detectors = pd.DataFrame(
        {"layer": [0], "head": [1], "induction": [0.5], "n": [12], "induction_ci_low": [0.25]}
        | {"induction_ci_high": [0.75], "ci_kind": ["cluster-bootstrap"]}
    )
    notes = interval_notes(detectors, bounds=("induction_ci_low", "induction_ci_high"))
    assert notes == {(0, 1): "(95% CI 0.250 to 0.750, n 12, cluster-bootstrap)"}
    assert interval_notes(detectors, bounds=("previous_token_ci_low", "previous_token_ci_high")) == {}


def _heatmaps() -> dict[str, Heatmap]:
    table = pd.DataFrame({"layer": [0, 1, 1], "head": [1, 0, 1], "effect": [-20.0, float("nan"), 3.5]})
    marks = {(0, 1): ("≈", "(estimate)")}
    across = pd.DataFrame({"task": ["a", "b"], "layer": [0, 1], "head": [1, 0], "share": [1.0, 0.25]})
    return {
        "plain": head_heatmap("p", "copy score", table.assign(score=[0.25, 1.0, 0.5]), "score", (2, 2)),
        "diverging": head_heatmap("d", "DLA", table, "effect", (2, 2), diverging=True),
        "marked": head_heatmap("k", "knockout\nsecond line", table, "effect", (2, 2), True, "ioi", marks),
        "across tasks": head_task_heatmap("c", "share <b>", across, "share", ["a", "b"]),
    }


@pytest.mark.parametrize("kind", ["plain", "diverging", "marked", "across tasks"])
def test_a_heatmaps_json_is_what_plotly_writes_for_its_figure(kind):
    heatmap = _heatmaps()[kind]
    spec = spec_json(heatmap.spec(plotly_white()))
    assert spec == page_json(heatmap_figure(heatmap))  # same text: keys, ints, floats, nulls
    assert page_json(heatmap.plotly()) == spec  # go.Figure(spec) gives the figure back
