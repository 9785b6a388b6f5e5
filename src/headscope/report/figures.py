"""The report's figures: plotly for the page, a matplotlib PNG twin of each for papers.

A figure is data first (`Heatmap`, `Scatter`): the same numbers draw the interactive
plotly figure and the static PNG, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from headscope.heads import head_name
from headscope.report import scatter_plot
from headscope.report.curve_plot import CurvePlot
from headscope.report.fonts import drawable, png_figure, save_png, use_fonts
from headscope.report.plotly_json import BLUES, FONT, RDBU, colorscale, finite, plotly_white, text


@dataclass(frozen=True)
class Heatmap:
    """A matrix with row and column labels; `cells` names each cell for the hover text."""

    name: str
    title: str
    z: list[list[float | None]]
    x: list[str]
    y: list[str]
    x_title: str
    y_title: str
    cells: list[list[str]]
    diverging: bool = False
    context: str = ""  # the task, prefixed to the PNG's title (the page shows it in the section)
    marks: list[list[str]] | None = None  # a short text drawn on a cell ("≈": an estimate)

    def plotly(self) -> go.Figure:
        return go.Figure(self.spec(plotly_white()))

    def spec(self, template: dict) -> dict:
        """The plotly figure as plotly's JSON (plotly_json), `template` its layout's template."""
        return {"data": [self._trace()], "layout": self._layout(template)}

    def _trace(self) -> dict:
        trace = {
            "type": "heatmap",
            "z": [finite(row) for row in self.z],
            "x": list(self.x),
            "y": list(self.y),
            "customdata": [list(row) for row in self.cells],
            "colorscale": colorscale(RDBU if self.diverging else BLUES),
            "reversescale": self.diverging,
            "hovertemplate": "%{customdata}: %{z:.3f}<extra></extra>",
        }
        if self.diverging:
            trace["zmid"] = 0
        if self.marks:
            trace |= {"text": [list(row) for row in self.marks], "texttemplate": "%{text}"}
        return trace

    def _layout(self, template: dict) -> dict:
        lines = self.title.count("\n")  # a second line of the title: "<br>" in plotly
        return {
            "title": text(self.title.replace("\n", "<br>")),
            "height": max(260, 36 * len(self.y) + 140),
            "margin": {"l": 60, "r": 20, "t": 50 + 18 * lines, "b": 50},
            "xaxis": {"title": text(self.x_title), "type": "category"},
            "yaxis": {"title": text(self.y_title), "type": "category", "autorange": "reversed"},
            "template": template,
            "font": dict(FONT),
        }

    def png(self, path: Path) -> Path:
        use_fonts()
        values = pd.DataFrame(self.z, dtype=float).to_numpy()
        width = max(3.5, 0.55 * len(self.x) + 2)
        fig, ax = png_figure((width, max(2.5, 0.45 * len(self.y) + 1.4)))
        if self.diverging:
            bound = max(float(abs(pd.DataFrame(values).abs().max().max())), 1e-9)
            image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        else:
            image = ax.imshow(values, cmap="Blues", aspect="auto")
        ax.set_xticks(
            range(len(self.x)), [drawable(x) for x in self.x], rotation=90 if len(self.x) > 8 else 0
        )
        ax.set_yticks(range(len(self.y)), [drawable(y) for y in self.y])
        for i, row in enumerate(self.marks or []):
            for j, mark in enumerate(row):
                if mark:
                    ax.text(j, i, drawable(mark), ha="center", va="center", fontsize=7)
        title = f"{self.context}: {self.title}" if self.context else self.title
        ax.set(xlabel=self.x_title, ylabel=self.y_title, title=drawable(title))
        fig.colorbar(image, ax=ax)
        return _save(fig, path)


@dataclass(frozen=True)
class Scatter:
    """One head's attention-vs-projection scatter (drawn by report.scatter_plot), with its stats."""

    name: str
    title: str
    points: pd.DataFrame  # scores.scatter.scatter_points
    stats: pd.DataFrame  # scores.scatter.scatter_stats

    def plotly(self) -> go.Figure:
        return scatter_plot.scatter_figure(self.points, self.stats, self.title)

    def spec(self, template: dict) -> dict:
        """The plotly figure as plotly's JSON (plotly_json), `template` its layout's template."""
        return scatter_plot.scatter_spec(self.points, self.stats, self.title, template)

    def png(self, path: Path) -> Path:
        return scatter_plot.write_scatter_png(Path(path), self.points, self.stats, self.title)


Figure = Heatmap | Scatter | CurvePlot


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_png(fig, path)


INTERVAL_OF = ("score", "dla", "attention", "entropy")  # the values whose tables' ci_low/ci_high are theirs


def interval_notes(
    table: pd.DataFrame, label: str = "", value: str = "", bounds: tuple[str, str] = ("ci_low", "ci_high")
) -> dict[tuple[int, int], str]:
    """Per head, its 95% interval as a hover note, '(95% CI low to high, n N, kind)' from the table's
    `bounds` columns and, where present, `n` and `ci_kind` (docs/methods.md §C); with `label`,
    '(label value, 95% CI ...)' for an interval of another quantity than the one drawn. Empty
    for a table without intervals (a run saved before them); a head without one (NaN) has none."""
    if not set(bounds) <= set(table.columns):
        return {}
    notes = {}
    for row, low, high in zip(table.itertuples(index=False), table[bounds[0]], table[bounds[1]], strict=True):
        low, high = float(low), float(high)
        if low != low or high != high:
            continue
        said = [f"n {int(row.n)}"] if "n" in table.columns and row.n == row.n else []
        said += [str(row.ci_kind)] if "ci_kind" in table.columns and isinstance(row.ci_kind, str) else []
        what = f"{label} {float(getattr(row, value)):.3f}, " if label else ""
        notes[(int(row.layer), int(row.head))] = (
            f"({what}95% CI {low:.3f} to {high:.3f}{''.join(', ' + s for s in said)})"
        )
    return notes


def head_heatmap(
    name: str,
    title: str,
    table: pd.DataFrame,
    value: str,
    shape: tuple[int, int],
    diverging: bool = False,
    context: str = "",
    marks: dict[tuple[int, int], tuple[str, str]] | None = None,
    notes: dict[tuple[int, int], str] | None = None,
) -> Heatmap:
    """Layer x head grid of `table[value]` (a table with layer and head columns); gaps stay empty.
    `marks`: per head, a short text drawn on its cell and a note added to its hover label.
    `notes`: per head, a note added to its hover label; by default, where `value` is one of
    `INTERVAL_OF`, the table's intervals (`interval_notes`)."""
    n_layers, n_heads = shape
    lookup = {(int(r.layer), int(r.head)): float(getattr(r, value)) for r in table.itertuples(index=False)}
    z = [[lookup.get((layer, head)) for head in range(n_heads)] for layer in range(n_layers)]
    marks = marks or {}
    notes = notes if notes is not None else interval_notes(table) if value in INTERVAL_OF else {}

    def label(head: tuple[int, int]) -> str:
        parts = ["head", head_name(head), marks.get(head, ("", ""))[1], notes.get(head, "")]
        return " ".join(part for part in parts if part)

    cells = [[label((layer, head)) for head in range(n_heads)] for layer in range(n_layers)]
    drawn = [[marks.get((layer, head), ("", ""))[0] for head in range(n_heads)] for layer in range(n_layers)]
    x, y = [str(h) for h in range(n_heads)], [str(layer) for layer in range(n_layers)]
    return Heatmap(name, title, z, x, y, "head", "layer", cells, diverging, context, drawn if marks else None)


def head_task_heatmap(name: str, title: str, table: pd.DataFrame, value: str, tasks: list[str]) -> Heatmap:
    """Head (rows, `l.h`) x task grid of `table[value]`, for the comparison across tasks."""
    heads = sorted(
        {(int(layer), int(head)) for layer, head in zip(table["layer"], table["head"], strict=True)}
    )
    lookup = {
        (r.task, int(r.layer), int(r.head)): float(getattr(r, value)) for r in table.itertuples(index=False)
    }
    z = [[lookup.get((task, *h)) for task in tasks] for h in heads]
    y = [head_name(h) for h in heads]
    cells = [[f"head {label}, {task}" for task in tasks] for label in y]
    return Heatmap(name, title, z, list(tasks), y, "task", "head", cells)
