"""MIB's circuit-localization measures (Mueller et al. 2025, arXiv 2504.13151) for any edge ranking.

For the top k% of edges by |score| (k in FRACTIONS, as percentages 0.1 ... 100), the circuit C_k
is run with every other edge patched to the donor (`faithfulness.Evaluator`), and

    f(k) = (m(C_k) - m(empty)) / (m(M) - m(empty)),

m the task metric (mean logit difference), M every edge (the clean model), empty no edge (the
donor's run). C_k holds int(k * n_edges) edges, as MIB's `evaluate_area_under_curve`
(hannamw/MIB-circuit-track) takes them. CPR is the area under f and CMD the area under |1 - f|,
both by the trapezoid rule over the edge fraction on a *linear* axis from 0.001 to 1 (MIB's
default, `log_scale=False`); with f in [0, 1] both lie in [0, 0.999] (f above 1, a circuit
beating the model, or below 0 takes them past).

Where ours differs from MIB's: our edges are at head granularity with the q, k and v inputs
(MIB's too), but a key/value group of a grouped-query model is one target here (MIB expands it
per query head); MIB prunes edges left dangling by the top-k cut before running C_k (`prune=True`),
we run C_k as cut; our metric is the logit difference with the task's contrast token. The export
(`mib_graph`) writes the layout MIB's circuit track reads: {"cfg", "nodes", "edges"} with edges
named "input->a0.h1<q>", "a0.h1->m0", "m0->logits"; a group's k/v score is written for each query
head that reads the group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from headscope.scores.circuit.graph import Edge, Source, Target

FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
X_AXIS = "edge fraction 0.001-1, linear, trapezoid rule (MIB's evaluate_area_under_curve, log_scale=False)"


@dataclass(frozen=True)
class Curve:
    """The faithfulness curve of one ranking and its two areas."""

    points: pd.DataFrame  # fraction, percent, edges, metric, f
    empty: float  # m(empty): every edge patched to the donor
    full: float  # m(M): the clean model
    cpr: float  # area under f (higher: more faithful circuits)
    cmd: float  # area under |1 - f| (0: circuits that reproduce the model)

    def as_dict(self) -> dict:
        return {
            "points": self.points.to_dict(orient="records"),
            "m_empty": self.empty,
            "m_full": self.full,
            "cpr": self.cpr,
            "cmd": self.cmd,
            "x_axis": X_AXIS,
        }


def edge_counts(n_edges: int, fractions: tuple[float, ...] = FRACTIONS) -> list[int]:
    """Edges in C_k per fraction: int(fraction * n_edges), as MIB counts them."""
    return [int(fraction * n_edges) for fraction in fractions]


def areas(fractions: tuple[float, ...], f: list[float]) -> tuple[float, float]:
    """(CPR, CMD): trapezoid areas under f and under |1 - f| over the fractions (linear axis)."""
    cpr = cmd = 0.0
    for i in range(len(fractions) - 1):
        width = fractions[i + 1] - fractions[i]
        cpr += width * (f[i] + f[i + 1]) / 2
        cmd += width * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2
    return cpr, cmd


def faithfulness_curve(
    metrics: Callable[[list[set[Edge]]], list[float]],
    ranking: list[Edge],
    fractions: tuple[float, ...] = FRACTIONS,
    known: dict[int, float] | None = None,
) -> Curve:
    """f(k) of the circuits of the first int(k * n) edges of `ranking` (every edge, best first).

    `metrics(kept_sets)` is F of each set (`faithfulness.Evaluator.metrics`), called once for every
    count not in `known` (F already measured: 0, the donor's run; len(ranking), the clean model)."""
    values = dict(known or {})
    counts = edge_counts(len(ranking), fractions)
    missing = sorted({0, len(ranking), *counts} - set(values))
    values |= dict(zip(missing, metrics([set(ranking[:c]) for c in missing]), strict=True))
    empty, full = values[0], values[len(ranking)]
    ms = [values[c] for c in counts]
    f = [(m - empty) / (full - empty) if full != empty else float("nan") for m in ms]
    cpr, cmd = areas(fractions, f)
    points = pd.DataFrame(
        {
            "fraction": fractions,
            "percent": [100 * x for x in fractions],
            "edges": counts,
            "metric": ms,
            "f": f,
        }
    )
    return Curve(points, empty, full, cpr, cmd)


def ranking_of(table: pd.DataFrame, edges_of: Callable[[pd.DataFrame], list[Edge]]) -> list[Edge]:
    """The table's edges by |score|, largest first (ties: table order), as MIB's `absolute` top-n."""
    order = table["score"].abs().sort_values(ascending=False, kind="stable").index
    return edges_of(table.loc[order])


# ---- export in MIB's circuit-track layout ---------------------------------------------------------


def _mib_source(source: Source) -> str:
    if source.kind == "embed":
        return "input"
    return f"m{source.layer}" if source.kind == "mlp" else f"a{source.layer}.h{source.index}"


def _mib_targets(target: Target, group_size: int) -> list[str]:
    if target.kind == "logits":
        return ["logits"]
    if target.kind == "mlp":
        return [f"m{target.layer}"]
    heads = (
        [target.index]
        if target.kind == "q"
        else range(target.index * group_size, (target.index + 1) * group_size)
    )
    return [f"a{target.layer}.h{h}<{target.kind}>" for h in heads]


def mib_graph(
    edges: list[Edge], scores: list[float], in_circuit: set[Edge], cfg: dict, group_size: int = 1
) -> dict:
    """The edge scores as MIB's circuit track reads an importance file: {"cfg", "nodes", "edges"}."""
    out_edges: dict[str, dict] = {}
    used = {"input", "logits"}
    for edge, score in zip(edges, scores, strict=True):
        source = _mib_source(edge.source)
        for target in _mib_targets(edge.target, group_size):
            kept = edge in in_circuit
            out_edges[f"{source}->{target}"] = {"score": float(score), "in_graph": kept}
            if kept:
                used |= {source, target.split("<")[0]}
    names = ["input"] + [
        name
        for layer in range(cfg["n_layers"])
        for name in [f"a{layer}.h{h}" for h in range(cfg["n_heads"])] + [f"m{layer}"]
    ]
    nodes = {name: {"in_graph": name in used} for name in names + ["logits"]}
    return {"cfg": cfg, "nodes": nodes, "edges": out_edges}
