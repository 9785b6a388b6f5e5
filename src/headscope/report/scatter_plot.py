"""The attention-vs-projection scatter of one head: an interactive plotly figure and a PNG.

Both draw the same points (`scores.scatter.scatter_points`) with the statistics of
`scatter_stats` in the legend, one colour per role. The headline is the per-role r; the
pooled r appears there only with its warning, when the roles form separate clusters.
"""

from __future__ import annotations

import html
import math
import textwrap
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from headscope.files import write_text
from headscope.report.fonts import drawable, png_figure, save_png, use_fonts
from headscope.report.plotly_json import finite, plotly_white, text

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
X_TITLE = "attention probability end -> token"


def y_title(scale: str) -> str:
    return "head output . W_U[token] / final LN scale" if scale == "ln_final" else "head output . W_U[token]"


def _number(value: float, digits: int = 2) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def legend_text(row) -> str:
    """'S: r=0.81 [0.75, 0.86], p=1e-20, N=500' from one row of scatter_stats."""
    if math.isnan(row["r"]):  # fewer than 3 points or a constant axis: the table's note says which
        return f"{row['role']}: r undefined, N={row['n']}"
    p = "nan" if math.isnan(row["p"]) else f"{row['p']:.2g}"
    interval = f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
    return f"{row['role']}: r={_number(row['r'])} {interval}, p={p}, N={row['n']}"


def _legends(stats: pd.DataFrame) -> dict[str, str]:
    return {str(row["role"]): legend_text(row) for _, row in stats.iterrows()}


def headline(stats: pd.DataFrame) -> str:
    """'IO: r=0.01, S: r=-0.13' and, when the roles form clusters, the pooled r with its warning."""
    roles = stats[stats["role"] != "pooled"]
    text = ", ".join(
        f"{row['role']}: " + ("r undefined" if math.isnan(row["r"]) else f"r={_number(row['r'])}")
        for _, row in roles.iterrows()
    )
    pooled = stats[stats["role"] == "pooled"]
    note = str(pooled["note"].iloc[0]) if "note" in pooled and not pooled.empty else ""
    if note.startswith("warning"):
        share = float(pooled["between_share"].iloc[0])
        text += (
            f" | pooled r={_number(pooled['r'].iloc[0])}, but {share:.0%} of it is the distance between "
            "the roles' clusters: read the per-role r"
        )
    return text


def scatter_figure(points: pd.DataFrame, stats: pd.DataFrame, title: str, scale: str = "none") -> go.Figure:
    """Plotly scatter, one trace per role; the pooled statistics go in the title line."""
    return go.Figure(scatter_spec(points, stats, title, plotly_white(), scale))


def scatter_spec(
    points: pd.DataFrame, stats: pd.DataFrame, title: str, template: dict, scale: str = "none"
) -> dict:
    """`scatter_figure` as plotly's JSON (report.plotly_json), `template` its layout's template."""
    legends = _legends(stats)
    traces = [
        _role_trace(group, legends.get(str(role), str(role)), COLOURS[index % len(COLOURS)])
        for index, (role, group) in enumerate(points.groupby("role", sort=False))
    ]
    subtitle = "<br>".join(html.escape(line) for line in textwrap.wrap(headline(stats), 95))
    layout = {
        "title": text(f"{html.escape(title)}<br><sup>{subtitle}</sup>"),
        "template": template,
        "height": 500,
        "margin": {"t": 110},
        "legend": {"orientation": "h", "y": -0.2},
        "xaxis": {"title": text(X_TITLE)},
        "yaxis": {"title": text(y_title(scale))},
    }
    return {"data": traces, "layout": layout}


def _role_trace(group: pd.DataFrame, legend: str, colour: str) -> dict:
    """One role's points: x rounded to 5 decimals, y to 4 significant digits."""
    words = [html.escape(str(w)) for w in group["word"]] if "word" in group else group["token"]
    return {
        "type": "scatter",
        "x": group["attention"].round(5).to_numpy(),  # kept an array, as plotly keeps a column
        "y": finite(float(f"{v:.4g}") for v in group["projection"]),
        "mode": "markers",
        "name": html.escape(legend),
        "marker": {"color": colour, "size": 6, "opacity": 0.7},
        "customdata": [[word, prompt] for word, prompt in zip(words, group["prompt"], strict=True)],
        "hovertemplate": "%{customdata[0]} (prompt %{customdata[1]})<br>"
        "attention %{x:.3f}<br>projection %{y:.3f}<extra></extra>",
    }


def write_scatter_html(path: Path, figure: go.Figure) -> Path:
    """A self-contained page: plotly.js is inlined, nothing is fetched from a CDN."""
    return write_text(Path(path), figure.to_html(full_html=True, include_plotlyjs=True))


def write_scatter_png(
    path: Path, points: pd.DataFrame, stats: pd.DataFrame, title: str, scale: str = "none"
) -> Path:
    """The same scatter as a static PNG drawn with matplotlib."""
    use_fonts()
    legends = _legends(stats)
    fig, ax = png_figure((7, 4.8))
    for index, (role, group) in enumerate(points.groupby("role", sort=False)):
        label = drawable(legends.get(str(role), str(role)))
        colour = COLOURS[index % len(COLOURS)]
        ax.scatter(group["attention"], group["projection"], s=12, alpha=0.7, color=colour, label=label)
    ax.set(
        xlabel=X_TITLE,
        ylabel=y_title(scale),
        title=drawable("\n".join([title, *textwrap.wrap(headline(stats), 110)])),
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
