"""The scatter's headline: per-role r first; the pooled r only with its warning."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headscope.report.figures import Scatter
from headscope.report.html import spec_json
from headscope.report.plotly_json import plotly_white
from headscope.report.scatter_plot import (
    headline,
    legend_text,
    scatter_figure,
    scatter_spec,
    write_scatter_png,
)
from headscope.scores.scatter import scatter_stats
from tests.report import plotly_reference


def _clusters() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    io = pd.DataFrame(
        {"role": "IO", "attention": rng.uniform(0, 0.01, 50), "projection": rng.normal(12, 1, 50)}
    )
    s = pd.DataFrame(
        {"role": "S", "attention": rng.uniform(0.99, 1, 50), "projection": rng.normal(-12, 1, 50)}
    )
    points = pd.concat([io, s], ignore_index=True).assign(prompt=np.tile(np.arange(50), 2))
    return points.assign(word="Mary", token=1)


def test_headline_leads_with_each_role_and_warns_about_clustered_pooled_r(tmp_path):
    points = _clusters()
    stats = scatter_stats(points, n_boot=50)
    r = stats.set_index("role")["r"]
    text = headline(stats)
    assert text.startswith(
        f"IO: r={r['IO']:.2f}, S: r={r['S']:.2f} | pooled r={r['pooled']:.2f}, but 100% of it"
    )
    assert text.endswith("read the per-role r")
    figure = scatter_figure(points, stats, "head 3.0")
    assert "IO: r=" in figure.layout.title.text and [t.name.split(":")[0] for t in figure.data] == ["IO", "S"]
    assert write_scatter_png(tmp_path / "s.png", points, stats, "head 3.0").read_bytes()[:4] == b"\x89PNG"


def test_pooled_r_stays_out_of_the_headline_when_roles_do_not_separate():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 80)
    points = pd.DataFrame(
        {"prompt": np.arange(80) % 40, "role": ["IO"] * 40 + ["S"] * 40, "attention": x, "projection": 3 * x}
    )
    text = headline(scatter_stats(points, n_boot=50))
    assert text == "IO: r=1.00, S: r=1.00"


def test_undefined_r_is_said_in_words():
    points = pd.DataFrame({"prompt": [0], "role": ["x1"], "attention": [0.5], "projection": [1.0]})
    stats = scatter_stats(points)
    assert legend_text(stats.iloc[0]) == "x1: r undefined, N=1"
    assert headline(stats) == "x1: r undefined"


def test_the_scatters_json_is_what_plotly_writes_for_its_figure():
    points = _clusters().assign(word=["<b>Mary</b>"] * 50 + ["Anne"] * 50)
    points.loc[3, "projection"] = float("nan")  # a NaN projection: null in plotly's JSON
    stats = scatter_stats(points, n_boot=50)
    spec = spec_json(Scatter("s", "head <3.0>", points, stats).spec(plotly_white()))
    assert spec == plotly_reference.page_json(plotly_reference.scatter_figure(points, stats, "head <3.0>"))
    assert plotly_reference.page_json(scatter_figure(points, stats, "head <3.0>")) == spec
    tokens = points.drop(columns="word")  # a table without words: the token ids in the hover
    scaled = spec_json(scatter_spec(tokens, stats, "t", plotly_white(), scale="ln_final"))
    assert scaled == plotly_reference.page_json(
        plotly_reference.scatter_figure(tokens, stats, "t", "ln_final")
    )
