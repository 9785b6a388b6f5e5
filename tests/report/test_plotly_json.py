"""Each piece of the direct plotly JSON is what plotly writes for the same argument."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io
import pytest

from headscope.report.plotly_json import (
    BLUES,
    RDBU,
    colorscale,
    finite,
    horizontal_line,
    plotly_white,
    typed_array,
)


def _written(figure: go.Figure) -> dict:
    return json.loads(plotly.io.to_json(figure, validate=False))


def _text(data) -> str:
    """The JSON text, keys sorted: 1 and 1.0 differ here, as on the page."""
    return json.dumps(data, sort_keys=True)


def test_the_template_is_what_update_layout_stores():
    figure = go.Figure().update_layout(template="plotly_white")
    assert _text(_written(figure)["layout"]["template"]) == _text(plotly_white())


@pytest.mark.parametrize(("name", "colours"), [("Blues", BLUES), ("RdBu", RDBU)])
def test_a_named_colour_scale_expands_as_plotly_expands_it(name, colours):
    trace = _written(go.Figure(go.Heatmap(z=[[1.0]], colorscale=name)))["data"][0]
    assert _text(trace["colorscale"]) == _text(colorscale(colours))


def test_nan_and_infinities_are_written_null_as_plotly_writes_them():
    values = [0.5, float("nan"), float("inf"), -float("inf"), None, 2]
    trace = _written(go.Figure(go.Scatter(y=values)))["data"][0]
    assert _text(trace["y"]) == _text(finite(values)) == "[0.5, null, null, null, null, 2]"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_float_column_is_written_as_plotly_writes_a_typed_array(dtype):
    column = pd.Series([0.125, 1 / 3, float("nan"), -2.0], dtype=dtype)
    trace = _written(go.Figure(go.Scatter(x=column)))["data"][0]
    assert trace["x"] == typed_array(column.to_numpy())
    empty = _written(go.Figure(go.Scatter(x=column[:0])))["data"][0]
    assert empty["x"] == typed_array(column[:0].to_numpy()) == []
    with pytest.raises(TypeError, match="typed_array: a 1-d float array"):
        typed_array(np.arange(3))


def test_a_horizontal_line_is_the_shape_add_hline_adds():
    figure = go.Figure(go.Scatter(x=[1, 2], y=[0, 1]))
    figure.add_hline(y=1, line_dash="dot", line_color="#888")
    shapes = _written(figure)["layout"]["shapes"]
    assert _text(shapes) == _text([horizontal_line(1, "dot", "#888")])
