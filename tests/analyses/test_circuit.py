"""The one circuit pipeline: the circuit chosen from MIB's curve (or by size) and measured."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from headscope.analyses.causal import edge_options
from headscope.analyses.circuit import FALLBACK_EDGES, choose, find_circuit
from headscope.models.loading import load_model
from headscope.scores.circuit import edges as circuit_edges
from headscope.scores.circuit import mib
from headscope.scores.circuit.faithfulness import Evaluator
from headscope.scores.circuit.stability import RESAMPLES, STABLE
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


def _table(scores: list[float], exact: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"score": scores, "exact": exact})


def _curve(edges: list[int], f: list[float]) -> mib.Curve:
    points = pd.DataFrame({"fraction": [e / 20 for e in edges], "edges": edges, "f": f})
    return mib.Curve(points.assign(percent=100 * points["fraction"], metric=f), 0.0, 1.0, 0.5, 0.5)


def test_the_circuit_is_the_first_point_of_the_curve_at_the_level_in_the_curves_ranking():
    table = _table([0.1, -0.9, 0.5, 0.3, 0.05], [0.0, 0.0, 0.0, 0.0, 9.0])  # exact disagrees on purpose
    chosen, why = choose(table, _curve([0, 1, 2, 5], [0.0, 0.5, 0.85, 1.0]), None, 0.8)
    assert list(chosen.index) == [1, 2]  # the top 2 by |score|, the ranking the curve measured
    assert "f >= 0.80" in why
    chosen, _ = choose(table, _curve([0, 1, 2, 5], [0.0, 0.9, 0.85, 1.0]), None, 0.8)
    assert list(chosen.index) == [1]  # the smallest that reaches it, even if a larger one dips
    chosen, why = choose(table, None, 2, 0.8)
    assert list(chosen.index) == [4, 0] and why == "the top 2 by |exact|"  # ties: table order


def test_no_point_reaching_the_level_falls_back_and_says_so():
    table = _table([float(i) for i in range(30)], [float(i) for i in range(30)])
    chosen, why = choose(table, _curve([0, 3, 30], [math.nan, math.nan, math.nan]), None, 0.8)
    assert len(chosen) == FALLBACK_EDGES and "no circuit of MIB's curve reaches f 0.80" in why


@pytest.fixture(scope="module")
def organism_ioi():
    model = load_model("organism")
    return model, build_dataset(get_task("ioi"), model.tokens, 12, 0)


def test_find_circuit_measures_the_chosen_circuit(organism_ioi):
    model, dataset = organism_ioi
    found = find_circuit(model, dataset, edge_options("eap-ig", exact_top=20))
    row = found.summary.iloc[0]
    kept = set(circuit_edges.edges_of(found.chosen, model))
    evaluator = Evaluator(model, dataset)  # its own runs: another computation of F(C)
    assert row["circuit"] == pytest.approx(evaluator.metric(kept), abs=1e-4)
    normalized = (row["circuit"] - row["no_edges"]) / (row["clean"] - row["no_edges"])
    assert row["normalized"] == pytest.approx(normalized) and row["normalized"] >= 0.8
    assert row["circuit_edges"] == len(found.chosen) and row["cpr"] == found.curve.cpr
    assert row["stability_resamples"] == RESAMPLES and 0 <= row["stability_low"] <= row["stability"] <= 1
    assert row["stable"] == (row["stability"] >= STABLE)


def test_the_circuits_stability_is_seeded(organism_ioi):
    """The same seed gives the same stability (its resamples as asked)."""
    model, dataset = organism_ioi
    options = edge_options("eap", exact_top=10)
    first = find_circuit(model, dataset, options, edges=5, curve=False, seed=4, resamples=50).summary
    again = find_circuit(model, dataset, options, edges=5, curve=False, seed=4, resamples=50).summary
    columns = ["stability", "stability_low", "stability_resamples", "stable"]
    assert first[columns].equals(again[columns]) and first["stability_resamples"].iloc[0] == 50


def test_a_circuit_of_a_given_size_needs_no_curve(organism_ioi):
    model, dataset = organism_ioi
    found = find_circuit(model, dataset, edge_options("eap", exact_top=10), edges=5, curve=False)
    assert found.curve is None and len(found.chosen) == 5 and "cpr" not in found.summary
