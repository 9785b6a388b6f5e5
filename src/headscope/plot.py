"""The report's figures as functions of the notebook API's tables, each returning a plotly Figure.

    hs.plot.heatmap(hs.ov_scores(model, "seq-digits"))          # layer x head, one panel per relation
    hs.plot.heatmap(hs.ablate(model, "seq-digits"))             # knockout: % of clean - 100
    hs.plot.scatter(hs.scatter(model, "ioi", head="1.0"))       # attention vs. projection
    hs.plot.attention(hs.attention_patterns(model, "induction", heads="2.0"))
    hs.plot.across_tasks(table, "dla")                          # head x task
    hs.plot.report(hs.load_run("out"))                          # every figure of a saved report

The figures are drawn by the report's own builders (headscope.report), so a notebook figure and
the report's figure of the same numbers are the same figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from headscope.errors import HeadscopeError
from headscope.heads import Component, head_name
from headscope.report import attention_plot, figures, scatter_plot  # their PNGs never touch pyplot's backend
from headscope.run import Run

__all__ = ["across_tasks", "attention", "heatmap", "report", "scatter"]

DETECTOR_COLUMNS = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class _Panel:
    """One layer x head grid: which rows, which column, its title, signed or not."""

    title: str
    rows: pd.DataFrame
    value: str
    diverging: bool


def heatmap(table: pd.DataFrame, value: str | None = None, title: str | None = None, **where) -> go.Figure:
    """A layer x head heatmap of a per-head table, one panel per relation, detector or key role.

    The column drawn is found from the table: OV `score` (one panel per relation and sign),
    the detectors, role `attention` (from `end`, one panel per key role), `dla`, a knockout's
    `pct_of_clean - 100` or a patching `value` (signed, on a diverging scale); heads only.

    Args:
        table: a table with `layer` and `head` columns (from `hs.ov_scores`, `hs.head_detectors`,
            `hs.role_attention`, `hs.direct_logit_attribution`, `hs.ablate`, `hs.patch`,
            `hs.attribution_patch`, ...).
        value: the column to draw, when the table has another.
        title: the figure's title (default: what is drawn, and the task).
        **where: keep rows whose column equals the value, e.g. `relation="copy"`, `key_role="IO"`.

    Returns:
        A plotly Figure (hover: head and value).

    Example:
        >>> hs.plot.heatmap(hs.ov_scores(model, "seq-digits", relations="next", n=20))
    """
    rows = _where(table, where)
    panels = _panels(rows, value)
    if not panels:
        raise HeadscopeError("heatmap: no rows left to draw; check the filters given")
    shape = _shape(table)
    context = str(table.attrs.get("task", ""))
    maps = [
        figures.head_heatmap(p.title, p.title, p.rows, p.value, shape, p.diverging, context) for p in panels
    ]
    if len(maps) == 1:
        figure = maps[0].plotly()
        figure.update_layout(title=title or _titled(maps[0].title, context))
        return figure
    return _side_by_side(maps, title or context)


def _where(table: pd.DataFrame, where: dict) -> pd.DataFrame:
    for column, wanted in where.items():
        if column not in table.columns:
            raise HeadscopeError(
                f"heatmap: no column {column!r} to filter on; columns: {', '.join(table.columns)}"
            )
        table = table[table[column] == wanted]
    return table


def _heads_only(table: pd.DataFrame) -> pd.DataFrame:
    if "layer" not in table.columns or "head" not in table.columns:
        raise HeadscopeError("heatmap: the table needs `layer` and `head` columns (one row per head)")
    return table[table["head"].notna()]


def _panels(table: pd.DataFrame, value: str | None) -> list[_Panel]:
    """The grids to draw: by the table's kind, or the one column named."""
    heads = _heads_only(table)
    if value is not None:
        if value not in table.columns:
            raise HeadscopeError(f"heatmap: no column {value!r}; columns: {', '.join(table.columns)}")
        return [_Panel(value, heads, value, _signed(heads[value]))]
    if {"relation", "sign", "score"} <= set(table.columns):
        return _ov_panels(heads)
    if set(DETECTOR_COLUMNS) <= set(table.columns):
        return [_Panel(f"{c.replace('_', '-')} score", heads, c, False) for c in DETECTOR_COLUMNS]
    if {"query_role", "key_role", "attention"} <= set(table.columns):
        return _attention_panels(heads)
    return _signed_panel(table, heads)


def _ov_panels(heads: pd.DataFrame) -> list[_Panel]:
    panels = []
    for (relation, sign), rows in heads.groupby(["relation", "sign"], sort=False):
        negative = sign < 0
        name = f"{'negative ' if negative else ''}{relation} score"
        panels.append(
            _Panel(
                f"{name} (top-{int(rows['k'].iloc[0])}, {rows['embedding'].iloc[0]})", rows, "score", False
            )
        )
    return panels


def _attention_panels(heads: pd.DataFrame) -> list[_Panel]:
    queries = heads["query_role"].unique()
    query = "end" if "end" in queries else queries[0]
    rows = heads[(heads["query_role"] == query) & (heads["key_role"] != query)]
    return [
        _Panel(f"attention {query} -> {key}", part, "attention", False)
        for key, part in rows.groupby("key_role", sort=True)
    ]


def _signed_panel(table: pd.DataFrame, heads: pd.DataFrame) -> list[_Panel]:
    columns = set(table.columns)
    if "dla" in columns:
        return [_Panel("direct logit attribution", heads, "dla", True)]
    if "pct_of_clean" in columns:
        effect = heads.assign(effect=heads["pct_of_clean"] - 100.0)
        method = str(heads["method"].iloc[0]) if "method" in columns and len(heads) else ""
        return [_Panel(f"knockout ({method}): % of clean - 100", effect, "effect", True)]
    if "value" in columns and "position" in columns:
        raise HeadscopeError(
            "heatmap: a by-position patching table has one grid per position; pass position=P"
        )
    if "value" in columns:
        kind = "attribution patching (approximation)" if "approximation" in columns else "patching"
        direction = table.attrs.get("direction", "denoise")
        return [_Panel(f"{direction} {kind}", heads, "value", True)]
    raise HeadscopeError(
        f"heatmap: cannot tell which column to draw from {', '.join(map(str, table.columns))}; pass value="
    )


def _signed(column: pd.Series) -> bool:
    values = pd.to_numeric(column, errors="coerce")
    return bool((values < 0).any())


def _shape(table: pd.DataFrame) -> tuple[int, int]:
    """(n_layers, n_heads): the model's, from the notebook API's attrs, else the table's largest."""
    if "n_layers" in table.attrs and "n_heads" in table.attrs:
        return int(table.attrs["n_layers"]), int(table.attrs["n_heads"])
    heads = _heads_only(table)
    return int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1


def _titled(text: str, context: str) -> str:
    return f"{context}: {text}" if context else text


def _side_by_side(maps: list[figures.Heatmap], title: str) -> go.Figure:
    """The panels in a row, on one colour scale (all panels of a table measure the same thing)."""
    single = [m.plotly() for m in maps]
    figure = make_subplots(rows=1, cols=len(maps), subplot_titles=[m.title for m in maps], shared_yaxes=True)
    for column, panel in enumerate(single, start=1):
        trace = panel.data[0]
        trace.update(coloraxis="coloraxis")
        figure.add_trace(trace, row=1, col=column)
        figure.update_xaxes(title="head", type="category", row=1, col=column)
    diverging = any(m.diverging for m in maps)
    figure.update_yaxes(title="layer", type="category", autorange="reversed", row=1, col=1)
    figure.update_yaxes(type="category", autorange="reversed")
    figure.update_layout(
        title=title,
        coloraxis=dict(colorscale="RdBu_r" if diverging else "Blues", cmid=0 if diverging else None),
        height=single[0].layout.height,
        width=max(500, 260 * len(maps) + 120),
        template="plotly_white",
    )
    return figure


def scatter(points: pd.DataFrame, stats: pd.DataFrame | None = None, title: str | None = None) -> go.Figure:
    """One head's attention-vs-projection scatter, one colour per role, r in the legend.

    Args:
        points: from `hs.scatter` (its `.attrs["stats"]` is used when `stats` is not given), or
            any table with `prompt, role, attention, projection` columns.
        stats: from `hs.scatter_stats(points)`.
        title: the figure's title (default: task and head).

    Returns:
        A plotly Figure.

    Example:
        >>> hs.plot.scatter(hs.scatter(model, "ioi", head="1.0", n=50))
    """
    if stats is None:
        stats = points.attrs.get("stats")
    if stats is None:
        raise HeadscopeError("scatter: give stats=hs.scatter_stats(points), or points from hs.scatter")
    head = points.attrs.get("head")
    name = f"head {head_name(head)}" if head is not None else "head"
    default = _titled(f"{name}, attention vs. projection", str(points.attrs.get("task", "")))
    scale = str(points.attrs.get("scale", "none"))
    return scatter_plot.scatter_figure(points, pd.DataFrame(stats), title or default, scale)


def attention(
    patterns: pd.DataFrame, head: str | tuple[int, int] | None = None, prompt: int | None = None
) -> go.Figure:
    """One head's attention pattern on one prompt: destination rows x source columns.

    Args:
        patterns: from `hs.attention_patterns`.
        head: "2.0" or (2, 0); may be left out when the table holds one head.
        prompt: the prompt's index; may be left out when the table holds one prompt.

    Returns:
        A plotly Figure (hover: destination -> source: attention).

    Example:
        >>> hs.plot.attention(hs.attention_patterns(model, "induction", heads="2.0", n=4))
    """
    layer, index = _only(patterns, head)
    number = _only_prompt(patterns, prompt)
    rows = patterns[
        (patterns["layer"] == layer) & (patterns["head"] == index) & (patterns["prompt"] == number)
    ]
    frame = _pattern_frame(rows)
    task = str(patterns.attrs.get("task", ""))
    return attention_plot.pattern_heatmap(
        frame, _titled(f"head {head_name((layer, index))}, prompt {number}", task)
    )


def _only(patterns: pd.DataFrame, head) -> tuple[int, int]:
    present = sorted(set(zip(patterns["layer"].astype(int), patterns["head"].astype(int), strict=True)))
    if head is None:
        if len(present) != 1:
            raise HeadscopeError(f"attention: the table holds {len(present)} heads; pass head='L.H'")
        return present[0]
    chosen = _head_of(head)
    if chosen not in present:
        shown = ", ".join(head_name(h) for h in present)
        raise HeadscopeError(f"attention: head={head!r} is not in the table; it holds {shown}")
    return chosen  # type: ignore[return-value]


def _head_of(head: str | tuple[int, int]) -> tuple[int, int]:
    if not isinstance(head, str):
        return int(head[0]), int(head[1])
    named = Component.named(head)
    if named is None or named.head is None:
        raise HeadscopeError(f"attention: head={head!r}: write a head as 'L.H', e.g. '2.0'")
    return named.layer, named.head


def _only_prompt(patterns: pd.DataFrame, prompt: int | None) -> int:
    present = sorted(set(patterns["prompt"].astype(int)))
    if prompt is None:
        if len(present) != 1:
            raise HeadscopeError(f"attention: the table holds prompts {present}; pass prompt=")
        return present[0]
    if prompt not in present:
        raise HeadscopeError(f"attention: prompt={prompt!r} is not in the table; it holds {present}")
    return prompt


def _pattern_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Destination x source grid (zero above the diagonal), labels 'i:token'."""
    labels = dict(zip(rows["destination"], rows["destination_token"], strict=True))
    size = len(labels)
    grid = rows.pivot_table(index="destination", columns="source", values="attention", fill_value=0.0)
    grid = grid.reindex(index=range(size), columns=range(size), fill_value=0.0)
    names = [f"{i}:{labels[i]}" for i in range(size)]
    grid.index, grid.columns = names, names
    return grid


def across_tasks(table: pd.DataFrame, value: str, title: str | None = None) -> go.Figure:
    """A head x task heatmap of one per-head value (the report's overview figure).

    Args:
        table: rows with `task, layer, head` and `value`, e.g. tables of several tasks joined with
            `pd.concat([hs.direct_logit_attribution(model, t).assign(task=t) for t in tasks])`.
        value: the column to draw.
        title: the figure's title.

    Returns:
        A plotly Figure, tasks in the order they first appear.

    Example:
        >>> tasks = ("ioi", "seq-digits")
        >>> dla = pd.concat([hs.direct_logit_attribution(model, t, n=50).assign(task=t) for t in tasks])
        >>> hs.plot.across_tasks(dla, "dla")
    """
    missing = {"task", "layer", "head", value} - set(table.columns)
    if missing:
        raise HeadscopeError(f"across_tasks: the table lacks {', '.join(sorted(missing))}")
    heads = table[table["head"].notna()]
    tasks = list(dict.fromkeys(heads["task"]))
    shown = title or f"{value} per head and task"
    return figures.head_task_heatmap("across-tasks", shown, heads, value, tasks).plotly()


def report(run: Run) -> dict[str, go.Figure]:
    """Every figure of a saved report, by name, as the report's page draws it.

    Args:
        run: from `hs.load_run(folder)` (a `headscope report --out folder`).

    Returns:
        {figure name: plotly Figure}, in page order.

    Example:
        >>> figures = hs.plot.report(hs.load_run("report"))
        >>> list(figures)
    """
    from headscope.report.page import build_page

    return {figure.name: figure.plotly() for figure in build_page(run).figures}
