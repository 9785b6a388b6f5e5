"""MIB's faithfulness curve, CPR and CMD, and the export in MIB's circuit-track layout."""

from __future__ import annotations

import numpy as np
import pytest

from headscope.scores.circuit import mib
from headscope.scores.circuit.graph import Edge, Source, Target


def test_areas_are_numpys_trapezoid_over_the_linear_fraction():
    f = [0.0, 0.1, 0.3, 0.2, 0.6, 0.9, 1.1, 0.95, 1.0, 1.0]
    cpr, cmd = mib.areas(mib.FRACTIONS, f)
    x = np.array(mib.FRACTIONS)
    assert cpr == pytest.approx(np.trapezoid(f, x))
    assert cmd == pytest.approx(np.trapezoid(np.abs(1 - np.array(f)), x))
    assert mib.areas(mib.FRACTIONS, [1.0] * 10) == pytest.approx((0.999, 0.0))


def test_counts_are_mibs_int_of_fraction_times_edges():
    assert mib.edge_counts(175) == [0, 0, 0, 1, 3, 8, 17, 35, 87, 175]
    assert mib.edge_counts(32491)[:3] == [32, 64, 162]


def _toy_edges(n: int) -> list[Edge]:
    return [Edge(Source(-1, "embed"), Target(i, "mlp")) for i in range(n)]


def test_curve_of_an_additive_metric_and_each_count_run_once():
    """m(kept) = sum of the kept edges' weights: f(k) is the share of the total weight kept."""
    ranking = _toy_edges(200)
    weight = {e: 1.0 / (i + 1) for i, e in enumerate(ranking)}
    calls = []

    def metrics(kept_sets: list[set[Edge]]) -> list[float]:
        calls.extend(len(kept) for kept in kept_sets)
        return [3.0 + sum(weight[e] for e in kept) for kept in kept_sets]

    curve = mib.faithfulness_curve(metrics, ranking)
    total = sum(weight.values())
    for row in curve.points.itertuples():
        assert row.f == pytest.approx(sum(1.0 / (i + 1) for i in range(row.edges)) / total)
    assert curve.empty == 3.0 and curve.full == pytest.approx(3.0 + total)
    assert sorted(calls) == sorted(set(calls))  # no count evaluated twice
    cpr, cmd = mib.areas(mib.FRACTIONS, list(curve.points["f"]))
    assert (curve.cpr, curve.cmd) == (cpr, cmd)


def test_known_values_are_not_run_again():
    ranking = _toy_edges(10)
    seen = []
    curve = mib.faithfulness_curve(
        lambda sets: [seen.append(len(k)) or float(len(k)) for k in sets], ranking, known={0: 0.0, 10: 10.0}
    )

    assert 0 not in seen and 10 not in seen
    assert curve.points["f"].iloc[-1] == 1.0


def test_mib_layout_names_and_group_expansion():
    edges = [
        Edge(Source(-1, "embed"), Target(0, "q", 1)),
        Edge(Source(0, "head", 1), Target(0, "mlp")),
        Edge(Source(0, "mlp"), Target(1, "k", 0)),
        Edge(Source(1, "head", 0), Target(2, "logits")),
    ]
    cfg = {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8}
    out = mib.mib_graph(edges, [0.5, -1.0, 2.0, 3.0], {edges[2]}, cfg, group_size=2)
    assert set(out["edges"]) == {
        "input->a0.h1<q>",
        "a0.h1->m0",
        "m0->a1.h0<k>",
        "m0->a1.h1<k>",
        "a1.h0->logits",
    }
    assert out["edges"]["m0->a1.h1<k>"] == {"score": 2.0, "in_graph": True}
    assert out["edges"]["a0.h1->m0"] == {"score": -1.0, "in_graph": False}
    assert list(out["nodes"]) == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    assert out["nodes"]["m0"]["in_graph"] and out["nodes"]["a1.h1"]["in_graph"]
    assert not out["nodes"]["a0.h1"]["in_graph"] and out["cfg"] == cfg
