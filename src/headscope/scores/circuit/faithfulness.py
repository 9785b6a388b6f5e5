"""A circuit of edges, measured: the model run with every edge outside it patched.

F(E) = the mean metric of a run in which each target input keeps the contributions of the
sources whose edge into it is in E (computed in this run) and takes the donor's (corrupted twin,
or per-position mean) for the other sources: input = run input + sum over excluded sources of
(donor - run contribution) (`layered.py`). F(every edge) is the clean model, F(no edge) the
donor's (both tested).

- faithfulness: 100 * F(C) / F(M), the circuit's metric as % of the clean one (M: every edge);
  `normalized`: (F(C) - F(none)) / (F(M) - F(none));
- nodes: the heads and MLPs that are a source or target of an edge of C (a key/value group
  stands for the query heads reading it);
- "removing" a set K of nodes from an edge set drops every edge whose source is in K (K's
  output is the donor's everywhere);
- completeness (Wang et al. 2022, IOI §4): for K = each single node, and `n_random` random
  subsets (each node in with probability 1/2, seeded): incompleteness |F(C \\ K) - F(M \\ K)|;
  a complete circuit loses what the model loses;
- minimality (ibid., with the subset K taken empty rather than searched): for each node v,
  F(C) - F(C \\ v), also as % of F(C); a node that changes nothing is not needed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from headscope.models.loading import Model
from headscope.scores import resume
from headscope.scores.circuit import activations, edges, mib
from headscope.scores.circuit.graph import Edge, Source, Target, all_edges, sources
from headscope.scores.circuit.layered import RunState, layered_logits
from headscope.tasks.dataset import Dataset


@dataclass(frozen=True)
class CircuitResult:
    """A measured circuit: its edges, metrics, faithfulness, completeness and minimality tables."""

    edges: pd.DataFrame  # source, target, input of the circuit's edges
    nodes: tuple[str, ...]
    metric: float  # F(C)
    clean: float  # F(every edge)
    ablated: float  # F(no edge)
    faithfulness: float  # 100 * F(C) / F(M)
    normalized: float  # (F(C) - F(none)) / (F(M) - F(none))
    completeness: pd.DataFrame  # removed, circuit, model, incompleteness
    minimality: pd.DataFrame  # node, without, drop, drop_pct


def _node(name_of_target: Target, model: Model) -> list[str]:
    t = name_of_target
    if t.kind == "logits":
        return []
    if t.kind == "mlp":
        return [f"mlp{t.layer}"]
    if t.kind == "q":
        return [f"{t.layer}.{t.index}"]
    size = model.arch.group_size
    return [f"{t.layer}.{h}" for h in range(t.index * size, (t.index + 1) * size)]


def nodes_of(chosen: list[Edge], model: Model) -> list[str]:
    found = [e.source.name for e in chosen if e.source.kind != "embed"]
    found += [n for e in chosen for n in _node(e.target, model)]
    return list(
        dict.fromkeys(
            sorted(
                found,
                key=lambda n: (int(n[3:]) + 0.5, n) if n.startswith("mlp") else (int(n.split(".")[0]), n),
            )
        )
    )


class Evaluator:
    """Runs F(E) for edge sets E on one dataset, keeping each batch's runs."""

    def __init__(self, model: Model, dataset: Dataset, donor: str = "corrupted", batch_size: int = 16):
        self.model, self.n = model, dataset.n
        self.resumer = edges.prepared(model)
        self.sources = sources(model.arch, model.n_layers)
        self.every = all_edges(model.arch, model.n_layers)
        self.runs = list(edges.batch_runs(model, self.resumer, dataset, batch_size, donor))
        self.donors = [activations.contributions(r.corrupted, model.weights, self.sources) for r in self.runs]

    def metric(self, kept: set[Edge]) -> float:
        total = 0.0
        for run, donor in zip(self.runs, self.donors, strict=True):
            activations.capture(self.resumer, run.batch.tokens)  # the batch's block arguments
            offsets = self._offsets(kept, donor)
            with torch.no_grad():
                logits = layered_logits(
                    self.resumer, self.model.arch, run.clean.pre[0], run.batch.end, offsets
                )
            total += float(resume.end_metric(logits, run.batch).sum())
        return total / self.n

    def _offsets(self, kept: set[Edge], donor: Tensor):
        index = {s: i for i, s in enumerate(self.sources)}
        excluded: dict[Target, list[Source]] = {}
        for edge in self.every:
            if edge not in kept:
                excluded.setdefault(edge.target, []).append(edge.source)
        W_O = self.model.weights.W_O

        def current(source: Source, state: RunState) -> Tensor:
            if source.kind == "embed":
                return state.embed
            if source.kind == "mlp":
                return state.mlp[source.layer]
            return state.z[source.layer][:, :, source.index] @ W_O[source.layer, source.index].to(state.embed)

        def offsets(chosen: list[Target], state: RunState) -> Tensor:
            zero = torch.zeros_like(state.embed)
            rows = [
                sum((donor[index[s]] - current(s, state) for s in excluded.get(t, [])), zero) for t in chosen
            ]
            return torch.stack(rows)

        return offsets


def _without(edge_set: set[Edge], removed: set[str]) -> set[Edge]:
    return {e for e in edge_set if e.source.name not in removed}


def evaluate_circuit(
    model: Model,
    dataset: Dataset,
    chosen: list[Edge],
    donor: str = "corrupted",
    n_random: int = 5,
    seed: int = 0,
    batch_size: int = 16,
) -> CircuitResult:
    """Faithfulness, completeness and minimality of the circuit `chosen` (see the module docstring)."""
    ev = Evaluator(model, dataset, donor, batch_size)
    circuit, every = set(chosen), set(ev.every)
    full, none, kept = ev.metric(every), ev.metric(set()), ev.metric(circuit)
    nodes = nodes_of(chosen, model)
    rng = random.Random(seed)
    subsets = [{v} for v in nodes] + [{v for v in nodes if rng.random() < 0.5} for _ in range(n_random)]
    complete = []
    for removed in subsets:
        in_circuit, in_model = ev.metric(_without(circuit, removed)), ev.metric(_without(every, removed))
        complete.append((",".join(sorted(removed)) or "-", in_circuit, in_model, abs(in_circuit - in_model)))
    minimal = []
    for v in nodes:
        without = ev.metric(_without(circuit, {v}))
        minimal.append((v, without, kept - without, 100 * (kept - without) / kept if kept else float("nan")))
    table = pd.DataFrame(
        [(e.source.name, e.target.name, e.target.kind) for e in chosen], columns=["source", "target", "input"]
    )
    return CircuitResult(
        edges=table,
        nodes=tuple(nodes),
        metric=kept,
        clean=full,
        ablated=none,
        faithfulness=100 * kept / full,
        normalized=(kept - none) / (full - none) if full != none else float("nan"),
        completeness=pd.DataFrame(complete, columns=["removed", "circuit", "model", "incompleteness"]),
        minimality=pd.DataFrame(minimal, columns=["node", "without", "drop", "drop_pct"]),
    )


def ranking_curve(
    model: Model,
    dataset: Dataset,
    table: pd.DataFrame,
    donor: str = "corrupted",
    batch_size: int = 16,
    evaluator: Evaluator | None = None,
) -> mib.Curve:
    """MIB's faithfulness curve, CPR and CMD of the table's ranking (|score|, `mib.py`).

    m(M) and m(empty) are the table's clean and corrupted metrics (F(every edge) and F(no edge)
    equal them: tested) with the corrupted donor; with the mean donor both are run."""
    ev = evaluator or Evaluator(model, dataset, donor, batch_size)
    ranking = mib.ranking_of(table, lambda rows: edges.edges_of(rows, model))
    known = {0: table.attrs["corrupted"], len(ranking): table.attrs["clean"]} if donor == "corrupted" else {}
    return mib.faithfulness_curve(ev.metric, ranking, known=known)
