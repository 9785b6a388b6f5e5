"""The circuit of a task, once: edges scored, MIB's curve of their ranking, the circuit chosen and
measured. `find_circuit` is what `hs.circuit`, `headscope circuit` and the report's circuit step
call; each front end only presents its `CircuitFindings`.

The circuit is the top `edges` by |exact| among the edges patched exactly when a count is given;
else the smallest circuit of MIB's curve (the ranking's top edges at MIB's fractions) whose
normalized faithfulness f = (F(C) - F(no edge)) / (F(model) - F(no edge)) reaches `level`.

Its stability (`scores.circuit.stability`: the mean Jaccard overlap with the top edges of
bootstrap resamples of the prompts, Méloux et al.'s 0.8 named) resamples the ranking that chose
it: each edge's score per prompt for a circuit of the curve (|score|, the curve's ranking); each
exactly patched edge's effect per prompt for a circuit by |exact| (a given count, or the fallback),
the candidates held fixed: the approximation's proposal of which edges to patch exactly is not
resampled, so there it is the stability of the exact step's choice among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from headscope.analyses.causal import circuit_edges
from headscope.models.loading import Model
from headscope.scores.circuit import edges as _edges
from headscope.scores.circuit import faithfulness as _faith
from headscope.scores.circuit import mib as _mib
from headscope.scores.circuit import stability as _stability
from headscope.tasks.dataset import Dataset

LEVEL = 0.8  # the circuit's normalized faithfulness: 0.8 of the way from no edge to the model
FALLBACK_EDGES = 10  # the circuit's edges where no point of the curve reaches the level


@dataclass(frozen=True)
class CircuitFindings:
    """Every edge's score, MIB's curve of their ranking, the circuit and its one-row summary."""

    edges: pd.DataFrame  # one row per edge, largest |score| first (edges.edge_scores)
    curve: _mib.Curve | None  # None where not asked for (a circuit of a given size)
    chosen: pd.DataFrame  # the circuit's rows of `edges`
    chosen_by: str  # how, in words
    summary: pd.DataFrame  # one row: method, agreement with exact, faithfulness, CPR, CMD


def find_circuit(
    model: Model,
    dataset: Dataset,
    options: _edges.EdgeOptions,
    edges: int | None = None,
    level: float = LEVEL,
    curve: bool = True,
    seed: int = 0,
    resamples: int = _stability.RESAMPLES,
) -> CircuitFindings:
    """Edges by `options`, MIB's curve (F of the ranking's top edges, every other edge patched to the
    donor), the circuit (`edges` by |exact|, or the curve's smallest reaching `level`) and its
    summary with its stability over `resamples` bootstrap resamples of the prompts (`seed`);
    `curve=False` skips the curve where `edges` gives the circuit's size."""
    scored = _edges.scored_edges(model, dataset, options, progress=False)
    table = scored.table
    evaluator = _faith.Evaluator(model, dataset, options.donor, options.batch_size)  # runs once for both
    found = None
    if curve or edges is None:
        found = _faith.ranking_curve(model, dataset, table, options.donor, evaluator=evaluator)
    chosen, chosen_by = choose(table, found, edges, level)
    summary = circuit_summary(model, dataset, table, chosen, evaluator).assign(chosen_by=chosen_by)
    by_curve = edges is None and reaching(found, level) is not None
    summary = summary.assign(**circuit_stability(scored, chosen, by_curve, resamples, seed).row())
    if found is not None:
        summary = summary.assign(cpr=found.cpr, cmd=found.cmd)
    summary = summary.assign(convention=table.attrs["convention"])
    return CircuitFindings(table, found, chosen, chosen_by, summary)


def choose(
    table: pd.DataFrame, curve: _mib.Curve | None, edges: int | None, level: float = LEVEL
) -> tuple[pd.DataFrame, str]:
    """The circuit's rows of `table` and how they were chosen (the module's note); where no point
    reaches `level` (the clean and corrupted metrics agree: f undefined), the top FALLBACK_EDGES
    by |exact|, said so."""
    if edges is not None:
        return circuit_edges(table, edges), f"the top {edges} by |exact|"
    point = reaching(curve, level)
    if point is None:
        return circuit_edges(table, FALLBACK_EDGES), (
            f"the top {FALLBACK_EDGES} by |exact|: no circuit of MIB's curve reaches f {level:.2f}"
        )
    order = _mib.ranking_of(table, lambda rows: list(rows.index))  # the curve's ranking: |score|
    chosen = table.loc[order[: int(point["edges"])]]
    return (
        chosen,
        f"the smallest circuit of MIB's curve with f >= {level:.2f} ({point['percent']:g}% of edges)",
    )


def reaching(curve: _mib.Curve, level: float) -> pd.Series | None:
    """The curve's smallest non-empty circuit whose normalized faithfulness reaches `level`, or None."""
    points = curve.points[(curve.points["edges"] > 0) & (curve.points["f"] >= level)]
    return None if points.empty else points.iloc[0]


def circuit_stability(
    scored: _edges.EdgeScores, chosen: pd.DataFrame, by_curve: bool, resamples: int, seed: int
) -> _stability.Stability:
    """The circuit's stability under resampling of the prompts, in the ranking that chose it (the
    module's note): |score| per prompt for a circuit of the curve, else |exact| per prompt (|score|
    where no edge was patched exactly, as `circuit_edges`)."""
    table = scored.table
    exact = not by_curve and table["exact"].notna().any()
    values = scored.exact_rows if exact else scored.score_rows
    rows = table.index.get_indexer(chosen.index)
    return _stability.stability(values, rows, resamples, seed)


def circuit_summary(
    model: Model, dataset: Dataset, table: pd.DataFrame, chosen: pd.DataFrame, evaluator=None
) -> pd.DataFrame:
    """One row: the method and its agreement with exact patching, and the circuit's faithfulness
    F(C) / F(every edge) with F(no edge) (scores.circuit.faithfulness; completeness and minimality
    are `evaluate_circuit`'s). F(every edge) is the clean metric and F(no edge) the corrupted
    one, which the edge table holds already: one patched run, not three. `evaluator`: a
    `faithfulness.Evaluator` of `dataset` already made (its batches' runs are reused)."""
    kept = set(_edges.edges_of(chosen, model))
    metric = (evaluator or _faith.Evaluator(model, dataset)).metric(kept)
    attrs = table.attrs
    full, none = attrs["clean"], attrs["corrupted"]
    row = {
        "method": attrs["method"],
        "approximation": bool(attrs["approximation"]),
        "n": dataset.n,
        "edges_total": len(table),
        "exact_checked": int(attrs["n_exact"]),
        "spearman": attrs["spearman"],
        "spearman_top50": attrs["spearman_top50"],
        "circuit_edges": len(chosen),
        "nodes": ",".join(_faith.nodes_of(sorted(kept), model)),
        "clean": full,
        "no_edges": none,
        "circuit": metric,
        "faithfulness": 100 * metric / full if full else float("nan"),
        "normalized": (metric - none) / (full - none) if full != none else float("nan"),
        "group_size": model.arch.group_size,
    }
    return pd.DataFrame([row])
