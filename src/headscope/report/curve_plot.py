"""MIB's faithfulness curve of a task's edge rankings: an interactive plotly figure and a PNG.

Both draw f(k) against the percentage of edges kept, one line per ranking (method), with CPR and
CMD in the legend. The x axis is drawn logarithmic so the small circuits are readable; the areas
are over the linear edge fraction, as MIB computes them (the title says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from headscope.report.fonts import png_figure, save_png, use_fonts

COLOURS = {"exact": "#2ca02c", "eap-ig": "#1f77b4", "eap": "#ff7f0e"}


@dataclass(frozen=True)
class CurvePlot:
    """f(k) per ranking: `lines` maps a method to (percent, f, cpr, cmd); `empty` / `full` are m(∅), m(M)."""

    name: str
    title: str
    lines: dict[str, tuple[list[float], list[float], float, float]]
    empty: float
    full: float
    context: str = ""

    def legend(self, method: str) -> str:
        _, _, cpr, cmd = self.lines[method]
        return f"{method}: CPR {cpr:.3f}, CMD {cmd:.3f}"

    def plotly(self) -> go.Figure:
        figure = go.Figure()
        for method, (x, f, _, _) in self.lines.items():
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=f,
                    mode="lines+markers",
                    name=self.legend(method),
                    line=dict(color=COLOURS.get(method)),
                    hovertemplate=f"{method}: %{{x:g}}% of edges, f = %{{y:.3f}}<extra></extra>",
                )
            )
        figure.add_hline(y=1, line_dash="dot", line_color="#888")
        sub = f"m(∅) {self.empty:.3f}, m(M) {self.full:.3f}; areas over the linear edge fraction"
        figure.update_layout(
            title=f"{self.title}<br><sup>{sub}</sup>",
            height=340,
            margin=dict(l=60, r=20, t=70, b=50),
            template="plotly_white",
            font=dict(family="sans-serif", size=12),
            legend=dict(orientation="h", y=-0.25),
        )
        figure.update_xaxes(title="% of edges in the circuit (log axis)", type="log")
        figure.update_yaxes(title="f = (m(C) - m(∅)) / (m(M) - m(∅))")
        return figure

    def png(self, path: Path) -> Path:
        use_fonts()
        fig, ax = png_figure((5.2, 3.4))
        for method, (x, f, _, _) in self.lines.items():
            ax.plot(x, f, marker="o", markersize=3, color=COLOURS.get(method), label=self.legend(method))
        ax.axhline(1, color="#888", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("% of edges in the circuit (log axis)")
        ax.set_ylabel("f")
        prefix = f"{self.context}: " if self.context else ""
        ax.set_title(f"{prefix}{self.title}\nm(∅) {self.empty:.3f}, m(M) {self.full:.3f}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return save_png(fig, path)
