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
from jaxtyping import Float
from torch import Tensor

from headscope.heads import Component
from headscope.models.loading import Model
from headscope.scores.circuit import activations, edges, mib, norms
from headscope.scores.circuit.graph import Edge, Target, all_edges, sources, targets
from headscope.scores.circuit.layered import RunState, layered_logits
from headscope.scores.metric import logit_diff
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
    if t.kind in ("mlp", "q"):
        return [t.name]
    size = model.arch.group_size
    return [Component(t.layer, h).name for h in range(t.index * size, (t.index + 1) * size)]


def nodes_of(chosen: list[Edge], model: Model) -> list[str]:
    found = [e.source.name for e in chosen if e.source.kind != "embed"]
    found += [n for e in chosen for n in _node(e.target, model)]
    return list(dict.fromkeys(sorted(found, key=lambda n: (Component.named(n).order, n))))


# Edge sets stacked as copies in one layered pass: at most MAX_STACKED, and only while one copy's
# per-layer difference tensor [source, batch, pos, d_model] times the copies stays within
# STACK_BYTES. Stacking pays on small models (the organism: 13 sources, 3.7 MB a copy, 8 stacked);
# beyond that a stacked pass costs more than the passes it replaces (the 135M shape, 301 sources,
# 4 prompts, 55 MB a copy: MIB's 8 curve sets took 38.7 s stacked by 8, 30.6 s by 4, 22.9 s by 2
# and 19.9 s one at a time, the same CPR and CMD).
MAX_STACKED = 8
STACK_BYTES = 32 * 2**20


class Written:
    """The contributions of one layered run so far, in source order, and the donor's minus them;
    each source's filled in once, when its layer has written it (not recomputed at every layer)."""

    def __init__(self, donor: Tensor, copies: int, W_O: Tensor, keep_current: bool) -> None:
        self.donor, self.copies, self.W_O = donor, copies, W_O  # donor [source, batch, pos, d_model]
        self.keep_current = keep_current  # only where a norm on the head outputs needs them
        self.current: Tensor | None = None  # [source, copy * batch, pos, d_model]
        self.diff: Tensor | None = None  # [source, copy, batch, pos, d_model]
        self.filled = self.heads_done = self.mlps_done = 0

    def update(self, state: RunState) -> int:
        """How many sources the run has written (embed, then per layer its heads and its MLP)."""
        if self.diff is None:
            self._start(state.embed)
        while True:
            if self.heads_done == self.mlps_done and self.heads_done < len(state.z):
                z = state.z[self.heads_done]
                self._fill(activations.head_outputs(z, self.W_O[self.heads_done]))  # [head, rows, pos, d]
                self.heads_done += 1
            elif self.mlps_done < self.heads_done and self.mlps_done < len(state.mlp):
                self._fill(state.mlp[self.mlps_done][None])
                self.mlps_done += 1
            else:
                return self.filled

    def _start(self, embed: Float[Tensor, "rows pos d_model"]) -> None:
        n, rows = self.donor.shape[0], embed.shape[0]
        self.current = embed.new_empty(n, *embed.shape) if self.keep_current else None
        self.diff = embed.new_empty(n, self.copies, rows // self.copies, *embed.shape[1:])
        self._fill(embed[None])

    def _fill(self, written: Float[Tensor, "source rows pos d_model"]) -> None:
        span = slice(self.filled, self.filled + written.shape[0])
        if self.current is not None:
            self.current[span] = written
        per_copy = written.unflatten(1, (self.copies, -1))  # [source, copy, batch, pos, d_model]
        torch.sub(self.donor[span, None], per_copy, out=self.diff[span])
        self.filled = span.stop


class Evaluator:
    """Runs F(E) for edge sets E on one dataset, keeping each batch's runs."""

    def __init__(self, model: Model, dataset: Dataset, donor: str = "corrupted", batch_size: int = 16):
        self.model, self.n = model, dataset.n
        self.runner = edges.prepared(model)
        self.sources = sources(model.arch, model.n_layers)
        self.every = all_edges(model.arch, model.n_layers)
        self.targets = targets(model.arch, model.n_layers)
        self.target_row = {t: i for i, t in enumerate(self.targets)}
        self.runs = list(edges.batch_runs(model, self.runner, dataset, batch_size, donor))
        self.donors = [activations.contributions(r.corrupted, model.weights, self.sources) for r in self.runs]
        column = {s: i for i, s in enumerate(self.sources)}
        self._edge_rows = torch.tensor([self.target_row[e.target] for e in self.every], dtype=torch.long)
        self._edge_columns = torch.tensor([column[e.source] for e in self.every], dtype=torch.long)
        self._edge_number = {e: i for i, e in enumerate(self.every)}

    def metric(self, kept: set[Edge]) -> float:
        return self.metrics([kept])[0]

    def stacked(self) -> int:
        """How many edge sets one layered pass takes as copies (MAX_STACKED, STACK_BYTES)."""
        widest = max(run.batch.tokens.numel() for run in self.runs)  # batch * pos
        one = len(self.sources) * widest * self.model.weights.d_model * 4  # float32 bytes
        return max(1, min(MAX_STACKED, STACK_BYTES // one))

    def metrics(self, kept_sets: list[set[Edge]], per_pass: int | None = None) -> list[float]:
        """F(E) for several edge sets, `per_pass` of them (default: `stacked()`) as stacked copies
        of each batch in one layered pass, each copy with its own excluded edges (tested equal to
        one at a time)."""
        per_pass = per_pass or self.stacked()
        masks = torch.stack([self._excluded(kept) for kept in kept_sets])  # [set, target, source]
        totals = torch.zeros(len(kept_sets), dtype=torch.float64)
        for run, donor in zip(self.runs, self.donors, strict=True):
            activations.capture(self.runner, run.batch.tokens)  # the batch's block arguments
            rows = run.batch.tokens.shape[0]
            for start in range(0, len(kept_sets), per_pass):
                chunk = masks[start : start + per_pass]
                copies = chunk.shape[0]
                resid0 = run.clean.pre[0].repeat(copies, 1, 1)  # [copy * batch, pos, d_model]
                with torch.no_grad():
                    logits = layered_logits(
                        self.runner,
                        self.model.arch,
                        resid0,
                        run.batch.end.repeat(copies),
                        self._offsets(chunk, donor),
                    )
                per_copy = logit_diff(
                    logits.float().cpu(), run.batch.answers.repeat(copies), run.batch.contrasts.repeat(copies)
                )
                totals[start : start + copies] += per_copy.reshape(copies, rows).sum(1).double()
        return (totals / self.n).tolist()

    def _excluded(self, kept: set[Edge]) -> Tensor:
        """[target, source]: 1 where the edge exists and is not kept (its input takes the donor's)."""
        excluded = torch.ones(len(self.every))
        excluded[[self._edge_number[e] for e in kept if e in self._edge_number]] = 0.0
        mask = torch.zeros(len(self.targets), len(self.sources))
        mask[self._edge_rows, self._edge_columns] = excluded
        return mask

    def _offsets(self, masks: Tensor, donor: Tensor):
        """Per target input of each stacked copy: the sum over its excluded sources of donor - current."""
        frozen = self.model.weights.attn_out_w is not None  # `_recomputed` reads the contributions
        written = Written(donor, masks.shape[0], self.model.weights.W_O, keep_current=frozen)

        def offsets(chosen: list[Target], state: RunState) -> Tensor:
            k, copies = written.update(state), masks.shape[0]
            diff = written.diff[:k]  # [source, copy, batch, pos, d_model]
            rows = torch.tensor([self.target_row[t] for t in chosen])
            weights = masks[:, rows, :k].to(diff)  # [copy, target, source]
            if self.model.weights.attn_out_w is None:
                return torch.einsum("cts,scbpd->tcbpd", weights, diff).flatten(
                    1, 2
                )  # [target, copy * batch, ...]
            current = written.current[:k].unflatten(1, (copies, -1))  # [source, copy, batch, pos, d_model]
            return self._recomputed(weights, diff, current, donor).flatten(1, 2)

        return offsets

    def _recomputed(self, weights: Tensor, diff: Tensor, current: Tensor, donor: Tensor) -> Tensor:
        """The offsets where a norm acts on the attention output: the MLPs and the embedding add up;
        each layer's excluded heads enter its write together, the norm recomputed (`norms.py`).
        weights [copy, target, source], diff and current [source, copy, batch, pos, d_model]."""
        heads = [i for i, s in enumerate(self.sources[: diff.shape[0]]) if s.kind == "head"]
        linear = weights.clone()
        linear[:, :, heads] = 0
        out = torch.einsum("cts,scbpd->tcbpd", linear, diff)  # [target, copy, batch, pos, d_model]
        for layer in range(len({self.sources[i].layer for i in heads})):
            rows = [i for i in heads if self.sources[i].layer == layer]
            out += norms.recomputed_offsets(
                current[rows], donor[rows], weights[:, :, rows], self.model.weights, layer
            )
        return out


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
    return mib.faithfulness_curve(ev.metrics, ranking, known=known)
