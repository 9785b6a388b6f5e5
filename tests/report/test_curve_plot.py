"""The faithfulness curves' plotly JSON is what plotly writes for the same figure."""

from __future__ import annotations

from headscope.report.curve_plot import CurvePlot
from headscope.report.html import spec_json
from headscope.report.plotly_json import plotly_white
from tests.report.plotly_reference import curve_figure, page_json


def test_the_curves_json_is_what_plotly_writes_for_its_figure():
    lines = {
        "eap-ig": ([0.1, 1.0, 10.0, 100.0], [0.0, 0.25, float("nan"), 1.0], 0.958, 0.047),
        "exact": ([1.0, 100.0], [0.5, 1.0], 0.5, 0.0),
        "other": ([1, 100], [2, 1], 1 / 3, float("inf")),  # no colour of its own; ints stay ints
    }
    curve = CurvePlot("c", "Faithfulness <i>", lines, 0.617, 15.745, "ioi")
    spec = spec_json(curve.spec(plotly_white()))
    assert spec == page_json(curve_figure(curve))
    assert page_json(curve.plotly()) == spec
