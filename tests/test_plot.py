"""hs.plot: each figure draws exactly the numbers of the table it is given (tables built by hand)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import headscope as hs
from headscope.errors import HeadscopeError
from headscope.run import Run

N_LAYERS, N_HEADS = 3, 2
HEADS = [(layer, head) for layer in range(N_LAYERS) for head in range(N_HEADS)]


def _ov_table(relations=("copy", "next"), signs=(1,)) -> pd.DataFrame:
    rows = [
        {"layer": la, "head": h, "relation": r, "sign": s, "k": 5, "embedding": "context"}
        | {"score": round(0.1 * la + 0.01 * h + (0.5 if r == "next" else 0) + (0.05 if s < 0 else 0), 3)}
        for la, h in HEADS
        for r in relations
        for s in signs
    ]
    table = pd.DataFrame(rows)
    table.attrs.update(task="seq-digits", n_layers=N_LAYERS, n_heads=N_HEADS)
    return table


def _grid(table: pd.DataFrame, column: str) -> list[list[float]]:
    """The layer x head grid a heatmap should show, by a plain loop."""
    return [
        [float(table[(table.layer == la) & (table["head"] == h)][column].iloc[0]) for h in range(N_HEADS)]
        for la in range(N_LAYERS)
    ]


def test_heatmap_of_one_relation_draws_its_scores():
    table = _ov_table(relations=("next",))
    figure = hs.plot.heatmap(table)
    assert isinstance(figure, go.Figure) and len(figure.data) == 1
    assert [list(row) for row in figure.data[0].z] == _grid(table, "score")
    assert figure.layout.title.text == "seq-digits: next score (top-5, context)"


def test_heatmap_of_several_relations_and_signs_has_a_panel_each():
    table = _ov_table(signs=(1, -1))
    figure = hs.plot.heatmap(table)
    titles = [a.text for a in figure.layout.annotations]
    assert titles == [
        "copy score (top-5, context)",
        "negative copy score (top-5, context)",
        "next score (top-5, context)",
        "negative next score (top-5, context)",
    ]
    negative_next = table[(table.relation == "next") & (table.sign == -1)]
    assert [list(row) for row in figure.data[3].z] == _grid(negative_next, "score")
    only = hs.plot.heatmap(table, relation="copy", sign=1)
    assert len(only.data) == 1 and [list(r) for r in only.data[0].z] == _grid(
        table[table.index % 4 == 0], "score"
    )


def test_heatmap_leaves_heads_the_table_lacks_empty():
    table = _ov_table(relations=("copy",))
    figure = hs.plot.heatmap(table[table.layer == 1])  # attrs keep the model's shape
    z = figure.data[0].z
    assert [list(row) for row in z] == [[None, None], _grid(table, "score")[1], [None, None]]


def test_knockout_heatmap_draws_percent_of_clean_minus_100_for_heads_only():
    rows = [{"component": f"{la}.{h}", "layer": la, "head": h, "method": "mean"} for la, h in HEADS]
    rows += [{"component": f"mlp{la}", "layer": la, "head": None, "method": "mean"} for la in range(N_LAYERS)]
    table = pd.DataFrame(rows).astype({"head": "Int64"})
    table["pct_of_clean"] = np.linspace(-10, 120, len(table))
    figure = hs.plot.heatmap(table)
    heads = table[table["head"].notna()]
    expected = [[v - 100 for v in row] for row in _grid(heads, "pct_of_clean")]
    assert np.allclose(np.array(figure.data[0].z, dtype=float), expected)
    assert figure.data[0].zmid == 0  # signed: a diverging scale around 0
    assert "knockout (mean)" in figure.layout.title.text


def test_detector_and_role_attention_tables_get_a_panel_per_detector_and_key_role():
    detectors = pd.DataFrame(
        {"layer": [la for la, _ in HEADS], "head": [h for _, h in HEADS]}
        | {
            c: np.arange(len(HEADS)) / 10 + i
            for i, c in enumerate(("previous_token", "duplicate_token", "induction"))
        }
    )
    figure = hs.plot.heatmap(detectors)
    assert [a.text for a in figure.layout.annotations] == [
        "previous-token score",
        "duplicate-token score",
        "induction score",
    ]
    assert [list(row) for row in figure.data[2].z] == _grid(detectors, "induction")
    attention = pd.DataFrame(
        [
            {
                "layer": la,
                "head": h,
                "query_role": q,
                "key_role": k,
                "attention": la + h / 10 + (k == "S"),
                "n": 5,
            }
            for la, h in HEADS
            for q in ("IO", "end")
            for k in ("IO", "S", "end")
        ]
    )
    figure = hs.plot.heatmap(attention)
    assert [a.text for a in figure.layout.annotations] == ["attention end -> IO", "attention end -> S"]
    to_s = attention[(attention.query_role == "end") & (attention.key_role == "S")]
    assert [list(row) for row in figure.data[1].z] == _grid(to_s, "attention")


def test_heatmap_errors_say_what_to_pass():
    with pytest.raises(HeadscopeError, match="value="):
        hs.plot.heatmap(pd.DataFrame({"layer": [0], "head": [0], "mystery": [1.0]}))
    with pytest.raises(HeadscopeError, match="layer"):
        hs.plot.heatmap(pd.DataFrame({"score": [1.0]}))
    with pytest.raises(HeadscopeError, match="no column 'relations'"):
        hs.plot.heatmap(_ov_table(), relations="copy")
    drawn = hs.plot.heatmap(
        pd.DataFrame({"layer": [0, 1], "head": [1, 0], "mystery": [1.0, -2.0]}), value="mystery"
    )
    assert [list(row) for row in drawn.data[0].z] == [[None, 1.0], [-2.0, None]]


def _points() -> pd.DataFrame:
    points = pd.DataFrame(
        {
            "prompt": [0, 1, 2, 0, 1, 2],
            "role": ["IO"] * 3 + ["S"] * 3,
            "token": [5, 6, 7, 8, 9, 10],
            "word": ["Amy", "Bob", "Cy", "Dee", "Ed", "Flo"],
            "attention": [0.9, 0.5, 0.1, 0.2, 0.3, 0.4],
            "projection": [3.0, 1.5, 0.2, -0.1, -0.3, -0.2],
        }
    )
    points.attrs.update(task="ioi", head=(1, 0), scale="none")
    return points


def test_scatter_draws_every_point_per_role_with_its_r():
    points = _points()
    stats = hs.scatter_stats(points, n_boot=50)
    points.attrs["stats"] = stats
    figure = hs.plot.scatter(points)
    assert [trace.name.split(":")[0] for trace in figure.data] == ["IO", "S"]
    for trace, (_, group) in zip(figure.data, points.groupby("role", sort=False), strict=True):
        assert list(trace.x) == list(group["attention"]) and list(trace.y) == list(group["projection"])
    r_io = float(np.corrcoef(points.attention[:3], points.projection[:3])[0, 1])
    assert f"r={r_io:.2f}" in figure.data[0].name
    assert "ioi: head 1.0" in figure.layout.title.text
    bare = points.copy()
    bare.attrs.clear()
    with pytest.raises(HeadscopeError, match="stats="):
        hs.plot.scatter(bare)
    assert len(hs.plot.scatter(bare, stats).data) == 2


def _patterns() -> pd.DataFrame:
    tokens = ["<bos>", "a", "b"]
    rows = [
        {"prompt": p, "layer": 2, "head": h, "destination": d, "destination_token": tokens[d]}
        | {"source": s, "source_token": tokens[s], "attention": (d + 1) * 10 + s + p + h / 10}
        for p in (0, 3)
        for h in (0, 1)
        for d in range(3)
        for s in range(d + 1)
    ]
    return pd.DataFrame(rows)


def test_attention_draws_one_heads_pattern_on_one_prompt():
    figure = hs.plot.attention(_patterns(), head="2.1", prompt=3)
    z = [list(row) for row in figure.data[0].z]
    assert z == [[10 + 3.1, 0, 0], [20 + 3.1, 21 + 3.1, 0], [30 + 3.1, 31 + 3.1, 32 + 3.1]]
    assert list(figure.data[0].y) == ["0:&lt;bos&gt;", "1:a", "2:b"]  # labels are escaped
    with pytest.raises(HeadscopeError, match="head='L.H'"):
        hs.plot.attention(_patterns(), prompt=0)
    with pytest.raises(HeadscopeError, match="holds 2.0, 2.1"):
        hs.plot.attention(_patterns(), head=(1, 1), prompt=0)


def test_across_tasks_draws_heads_by_tasks():
    table = pd.concat(
        [
            _ov_table(relations=("copy",)).assign(task="ioi"),
            _ov_table(relations=("copy",)).assign(task="seq-digits", score=lambda t: -t.score),
        ]
    )
    figure = hs.plot.across_tasks(table, "score")
    assert list(figure.data[0].x) == ["ioi", "seq-digits"]
    assert list(figure.data[0].y) == [f"{la}.{h}" for la, h in HEADS]
    assert [row[1] for row in figure.data[0].z] == [-v for v in table[table.task == "ioi"]["score"]]


def test_report_gives_every_figure_of_the_page_by_name():
    from headscope.report.page import build_page

    dla = pd.DataFrame(
        {"task": "ioi", "component": [f"{la}.{h}" for la, h in HEADS], "kind": "head"}
        | {
            "layer": [la for la, _ in HEADS],
            "head": [h for _, h in HEADS],
            "dla": np.arange(len(HEADS)) - 2.0,
        }
    )
    run = Run(
        tables={"dla": dla, "ov_scores": _ov_table().assign(task="ioi")},
        options={"tasks": ["ioi"]},
        model={"name": "hand", "n_layers": N_LAYERS, "n_heads": N_HEADS},
        seed=0,
    )
    figures = hs.plot.report(run)
    assert list(figures) == [figure.name for figure in build_page(run).figures]
    assert all(isinstance(figure, go.Figure) for figure in figures.values())
    assert any("dla" in name for name in figures)


def test_importing_plot_keeps_the_users_matplotlib_backend():
    code = "import headscope.plot, matplotlib.pyplot as plt; print(plt.get_backend())"
    env = os.environ | {"MPLBACKEND": "svg"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "svg"
