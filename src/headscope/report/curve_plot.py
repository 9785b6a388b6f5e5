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
from headscope.report.plotly_json import FONT, finite, horizontal_line, plotly_white, text

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
        return go.Figure(self.spec(plotly_white()))

    def spec(self, template: dict) -> dict:
        """The plotly figure as plotly's JSON (report.plotly_json), `template` its layout's template."""
        traces = [self._trace(method, x, f) for method, (x, f, _, _) in self.lines.items()]
        sub = f"m(∅) {self.empty:.3f}, m(M) {self.full:.3f}; areas over the linear edge fraction"
        layout = {
            "title": text(f"{self.title}<br><sup>{sub}</sup>"),
            "height": 340,
            "margin": {"l": 60, "r": 20, "t": 70, "b": 50},
            "template": template,
            "font": dict(FONT),
            "legend": {"orientation": "h", "y": -0.25},
            "shapes": [horizontal_line(1, "dot", "#888")],
            "xaxis": {"title": text("% of edges in the circuit (log axis)"), "type": "log"},
            "yaxis": {"title": text("f = (m(C) - m(∅)) / (m(M) - m(∅))")},
        }
        return {"data": traces, "layout": layout}

    def _trace(self, method: str, x: list[float], f: list[float]) -> dict:
        colour = COLOURS.get(method)  # a method without a colour: plotly's next default one
        return {
            "type": "scatter",
            "x": finite(x),
            "y": finite(f),
            "mode": "lines+markers",
            "name": self.legend(method),
            **({"line": {"color": colour}} if colour else {}),
            "hovertemplate": f"{method}: %{{x:g}}% of edges, f = %{{y:.3f}}<extra></extra>",
        }

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
