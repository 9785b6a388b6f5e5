"""The report's figures built through plotly's own API, as the report built them before it wrote
their JSON directly: the independent reference the direct JSON (`spec`) is compared against."""

from __future__ import annotations

import html
import json
import textwrap

import plotly.graph_objects as go
import plotly.io

from headscope.report.curve_plot import COLOURS as CURVE_COLOURS
from headscope.report.curve_plot import CurvePlot
from headscope.report.figures import Heatmap, Scatter
from headscope.report.html import script_json
from headscope.report.scatter_plot import COLOURS, X_TITLE, _legends, headline, y_title


def page_json(figure: go.Figure) -> str:
    """The figure as the page held it: plotly's JSON, read back and written safe for <script>."""
    return script_json(json.loads(plotly.io.to_json(figure, validate=False)))


def reference(figure: Heatmap | Scatter | CurvePlot) -> go.Figure:
    if isinstance(figure, Heatmap):
        return heatmap_figure(figure)
    if isinstance(figure, Scatter):
        return scatter_figure(figure.points, figure.stats, figure.title)
    return curve_figure(figure)


def heatmap_figure(heatmap: Heatmap) -> go.Figure:
    scale = "RdBu" if heatmap.diverging else "Blues"
    text = dict(text=heatmap.marks, texttemplate="%{text}") if heatmap.marks else {}
    figure = go.Figure(
        go.Heatmap(
            z=heatmap.z,
            x=heatmap.x,
            y=heatmap.y,
            customdata=heatmap.cells,
            colorscale=scale,
            zmid=0 if heatmap.diverging else None,
            reversescale=heatmap.diverging,
            hovertemplate="%{customdata}: %{z:.3f}<extra></extra>",
            **text,
        )
    )
    height = max(260, 36 * len(heatmap.y) + 140)
    lines = heatmap.title.count("\n")
    margin = dict(l=60, r=20, t=50 + 18 * lines, b=50)
    figure.update_layout(title=heatmap.title.replace("\n", "<br>"), height=height, margin=margin)
    figure.update_xaxes(title=heatmap.x_title, type="category")
    figure.update_yaxes(title=heatmap.y_title, type="category", autorange="reversed")
    figure.update_layout(template="plotly_white", font=dict(family="sans-serif", size=12))
    return figure


def scatter_figure(points, stats, title: str, scale: str = "none") -> go.Figure:
    legends = _legends(stats)
    figure = go.Figure()
    for index, (role, group) in enumerate(points.groupby("role", sort=False)):
        words = [html.escape(str(w)) for w in group["word"]] if "word" in group else group["token"]
        figure.add_trace(
            go.Scatter(
                x=group["attention"].round(5),
                y=[float(f"{v:.4g}") for v in group["projection"]],
                mode="markers",
                name=html.escape(legends.get(str(role), str(role))),
                marker=dict(color=COLOURS[index % len(COLOURS)], size=6, opacity=0.7),
                customdata=list(zip(words, group["prompt"], strict=True)),
                hovertemplate="%{customdata[0]} (prompt %{customdata[1]})<br>"
                "attention %{x:.3f}<br>projection %{y:.3f}<extra></extra>",
            )
        )
    subtitle = "<br>".join(html.escape(line) for line in textwrap.wrap(headline(stats), 95))
    figure.update_layout(
        title=f"{html.escape(title)}<br><sup>{subtitle}</sup>",
        template="plotly_white",
        height=500,
        margin=dict(t=110),
        legend=dict(orientation="h", y=-0.2),
    )
    figure.update_xaxes(title=X_TITLE)
    figure.update_yaxes(title=y_title(scale))
    return figure


def curve_figure(curve: CurvePlot) -> go.Figure:
    figure = go.Figure()
    for method, (x, f, _, _) in curve.lines.items():
        figure.add_trace(
            go.Scatter(
                x=x,
                y=f,
                mode="lines+markers",
                name=curve.legend(method),
                line=dict(color=CURVE_COLOURS.get(method)),
                hovertemplate=f"{method}: %{{x:g}}% of edges, f = %{{y:.3f}}<extra></extra>",
            )
        )
    figure.add_hline(y=1, line_dash="dot", line_color="#888")
    sub = f"m(∅) {curve.empty:.3f}, m(M) {curve.full:.3f}; areas over the linear edge fraction"
    figure.update_layout(
        title=f"{curve.title}<br><sup>{sub}</sup>",
        height=340,
        margin=dict(l=60, r=20, t=70, b=50),
        template="plotly_white",
        font=dict(family="sans-serif", size=12),
        legend=dict(orientation="h", y=-0.25),
    )
    figure.update_xaxes(title="% of edges in the circuit (log axis)", type="log")
    figure.update_yaxes(title="f = (m(C) - m(∅)) / (m(M) - m(∅))")
    return figure
