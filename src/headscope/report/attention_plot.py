"""A self-contained HTML page of attention patterns (destination x source) and role attention."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from headscope.files import write_text


def pattern_heatmap(frame: pd.DataFrame, title: str) -> go.Figure:
    """One head's pattern (rows: destination, columns: source, labels 'i:token') as a heatmap."""
    rows = [html.escape(str(label)) for label in frame.index]
    columns = [html.escape(str(label)) for label in frame.columns]
    figure = go.Figure(
        go.Heatmap(
            z=frame.to_numpy(),
            x=columns,
            y=rows,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="%{y} -> %{x}: %{z:.3f}<extra></extra>",
        )
    )
    size = max(360, 22 * len(rows) + 160)
    figure.update_layout(title=html.escape(title), template="plotly_white", height=size, width=size + 80)
    figure.update_xaxes(title="source", type="category", tickangle=-60)
    figure.update_yaxes(title="destination", type="category", autorange="reversed")
    return figure


def _table_html(title: str, table: pd.DataFrame) -> str:
    body = table.to_html(index=False, float_format=lambda v: f"{v:.3f}", escape=True, border=0)
    return f"<h2>{html.escape(title)}</h2>{body}"


def attention_page(title: str, prompt: str, figures: list[go.Figure], tables: dict[str, pd.DataFrame]) -> str:
    """The page: the prompt, one heatmap per head (plotly.js inlined once), then each titled table."""
    divs = [
        figure.to_html(full_html=False, include_plotlyjs=index == 0) for index, figure in enumerate(figures)
    ]
    sections = [_table_html(name, table) for name, table in tables.items()]
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p><code>{html.escape(prompt)}</code></p>"
        + "\n".join(divs + sections)
        + "</body></html>\n"
    )


def write_attention_html(
    path: Path, title: str, prompt: str, figures, tables: dict[str, pd.DataFrame]
) -> Path:
    return write_text(Path(path), attention_page(title, prompt, figures, tables))
