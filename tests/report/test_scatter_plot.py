"""The scatter's headline: per-role r first; the pooled r only with its warning."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headscope.report.scatter_plot import headline, legend_text, scatter_figure, write_scatter_png
from headscope.scores.scatter import scatter_stats


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
