"""The report's plotly figures written directly as the JSON plotly.js reads.

Each figure's `spec(template)` is the dict `plotly.io.to_json` writes for the same `go.Figure`
(tests/report compare the two), built from plain dicts and lists: plotly's figure objects and
their validation were most of the page's figure time. A pandas column stays a numpy array, as
plotly keeps it, and is written as plotly writes one (`typed_array`, json.dumps's `default`).
`go.Figure(spec)` gives the figure back, so the notebook API's figures and the page's come from
one description.

The template's JSON is read once per page (`plotly_white`) and handed to every spec.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable

import numpy as np
import plotly.colors
import plotly.io

BLUES = tuple(plotly.colors.sequential.Blues)
RDBU = tuple(plotly.colors.diverging.RdBu)
FONT = {"family": "sans-serif", "size": 12}  # the report's text, where a figure sets it
TYPED = {"float64": "f8", "float32": "f4"}  # numpy dtype -> plotly.js typed-array name


def plotly_white() -> dict:
    """The "plotly_white" template as `update_layout(template="plotly_white")` stores it."""
    return plotly.io.templates["plotly_white"].to_plotly_json()


def text(value: str) -> dict:
    """A title as plotly writes one given as a string."""
    return {"text": value}


def colorscale(colours: Iterable[str]) -> list[list]:
    """A named scale as plotly expands its name: the colours at evenly spaced stops, 0 to 1."""
    colours = list(colours)
    last = len(colours) - 1
    return [[i / last, colour] for i, colour in enumerate(colours)]


def finite(values: Iterable[float | None]) -> list[float | None]:
    """Numbers as plotly's JSON writes them: NaN and +-inf become null."""
    return [None if v is None or not math.isfinite(v) else v for v in values]


def typed_array(values: np.ndarray) -> dict | list:
    """A float array (a pandas column passed to plotly) as plotly writes it: base64 of its bytes."""
    values = np.ascontiguousarray(values)
    if values.dtype.name not in TYPED or values.ndim != 1:
        raise TypeError(f"typed_array: a 1-d float array, not {values.dtype} {values.shape}")
    if values.size == 0:
        return []  # plotly writes an empty array as a list
    return {"dtype": TYPED[values.dtype.name], "bdata": base64.b64encode(values).decode("ascii")}


def horizontal_line(y: float, dash: str, colour: str) -> dict:
    """The shape `figure.add_hline(y, line_dash=dash, line_color=colour)` adds to the layout."""
    line = {"color": colour, "dash": dash}
    return {"line": line, "type": "line", "x0": 0, "x1": 1, "xref": "x domain", "y0": y, "y1": y, "yref": "y"}
