"""Trajectory figures: a score of every head against the training step, one line per head.

Heads that carry the score's label at some checkpoint are drawn in colour (their first labelled
step marked with a dot); the others are thin grey lines; the label's threshold is dotted.
`trajectory_figure` is the page's interactive plotly figure (a menu picks task and score),
`trajectory_png` the static panels of the labels that appear (matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from headscope.heads import head_name
from headscope.scores.labels import LabelThresholds
from headscope.sweeps.tables import LABEL_SCORES

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
GREY = "#b0b0b0"
MAX_PANELS = 4


def threshold_of(analysis: str) -> float | None:
    """The threshold a head's score passes for the label given for it (scores/labels.py)."""
    thresholds = LabelThresholds()
    detector = ("induction", "previous_token", "duplicate_token")
    values = {"next": thresholds.next, "copy": thresholds.copy, "negative_copy": thresholds.negative_copy}
    return thresholds.detector if analysis in detector else values.get(analysis)


def highlighted(first: pd.DataFrame, family: str, task: str, analysis: str) -> dict[tuple[int, int], str]:
    """(layer, head) -> its label, for heads labelled by this score on this task at some step."""
    mine = first[(first["family"] == family) & (first["task"] == task)]
    mine = mine[[LABEL_SCORES.get(label) == analysis for label in mine["label"]]]
    return {(int(r.layer), int(r.head)): r.label for r in mine.itertuples(index=False)}


def panels(first: pd.DataFrame, family: str) -> list[tuple[str, str]]:
    """(task, analysis) of the labels that appear in this family, in order of first appearance."""
    mine = first[first["family"] == family].sort_values("first_step", kind="stable")
    found = [(r.task, LABEL_SCORES[r.label]) for r in mine.itertuples(index=False) if r.label in LABEL_SCORES]
    return list(dict.fromkeys(found))[:MAX_PANELS]


def _series(heads: pd.DataFrame, family: str, task: str, analysis: str) -> pd.DataFrame:
    rows = heads[(heads["family"] == family) & (heads["task"] == task) & (heads["analysis"] == analysis)]
    return rows[rows["step"].notna()].sort_values(["layer", "head", "step"], kind="stable")


def trajectory_figure(heads: pd.DataFrame, first: pd.DataFrame, family: str) -> go.Figure:
    """Every (task, score) of the family as traces; a menu shows one at a time."""
    mine = heads[heads["family"] == family]
    keys = list(dict.fromkeys(zip(mine["task"], mine["analysis"], strict=True)))
    keys = sorted(keys, key=lambda key: (key not in panels(first, family), key))
    figure, spans = go.Figure(), []
    for number, (task, analysis) in enumerate(keys):
        start = len(figure.data)
        marked = highlighted(first, family, task, analysis)
        for (layer, head), rows in _series(heads, family, task, analysis).groupby(
            ["layer", "head"], sort=True
        ):
            label = marked.get((layer, head))
            color = PALETTE[list(marked).index((layer, head)) % len(PALETTE)] if label else GREY
            figure.add_trace(
                go.Scatter(
                    x=rows["step"].astype(float), y=rows["score"], mode="lines+markers", visible=number == 0,
                    name=head_name((layer, head)) + (f" ({label})" if label else ""),
                    line={"color": color, "width": 3 if label else 1}, marker={"size": 5 if label else 3},
                    opacity=1.0 if label else 0.6,
                )
            )  # fmt: skip
        spans.append((task, analysis, start, len(figure.data)))
    count = len(figure.data)
    buttons = [
        {"label": f"{task}: {analysis}", "method": "update",
         "args": [{"visible": [a <= i < b for i in range(count)]}, {"title.text": f"{task}: {analysis}"}]}
        for task, analysis, a, b in spans
    ]  # fmt: skip
    title = f"{spans[0][0]}: {spans[0][1]}" if spans else "no scores"
    figure.update_layout(
        title={"text": title}, xaxis_title="training step", yaxis_title="score", height=460,
        updatemenus=[{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.15, "yanchor": "top"}],
        margin={"t": 90}, template="plotly_white",
    )  # fmt: skip
    return figure


def trajectory_png(heads: pd.DataFrame, first: pd.DataFrame, family: str, path: Path) -> Path | None:
    """Static panels (one per label that appears, at most four); None when no label appears."""
    from headscope.report.fonts import png_figure

    chosen = panels(first, family)
    if not chosen:
        return None
    figure, axes = png_figure((4.6 * len(chosen), 3.6), nrows=1, ncols=len(chosen), squeeze=False)
    for axis, (task, analysis) in zip(axes[0], chosen, strict=True):
        _draw_panel(axis, heads, first, family, task, analysis)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def _draw_panel(axis, heads, first, family: str, task: str, analysis: str) -> None:
    marked = highlighted(first, family, task, analysis)
    mine = first[(first["family"] == family) & (first["task"] == task)]
    for (layer, head), rows in _series(heads, family, task, analysis).groupby(["layer", "head"], sort=True):
        label = marked.get((layer, head))
        if label is None:
            axis.plot(rows["step"], rows["score"], color=GREY, linewidth=0.8, alpha=0.7)
            continue
        color = PALETTE[list(marked).index((layer, head)) % len(PALETTE)]
        name = f"{head_name((layer, head))} {label}"
        axis.plot(rows["step"], rows["score"], color=color, linewidth=2.2, label=name)
        found = mine[(mine["layer"] == layer) & (mine["head"] == head) & (mine["label"] == label)]
        at = int(found["first_step"].min())
        axis.plot([at], rows.loc[rows["step"] == at, "score"].iloc[:1], "o", color=color, markersize=7)
    line = threshold_of(analysis)
    if line is not None:
        axis.axhline(line, color="black", linestyle=":", linewidth=1)
    axis.set_title(f"{task}: {analysis.replace('_', '-')} score")
    axis.set_xlabel("training step")
    axis.set_ylim(-0.02, 1.02) if analysis in LABEL_SCORES.values() else None
    axis.legend(fontsize=8, loc="best")
