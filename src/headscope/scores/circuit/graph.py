"""The edges of a model's computational graph: which source writes into which target input.

Sources (what writes into the residual stream, biases left out: they are constant):
- `embed`: the embedding, `blocks.0.hook_resid_pre` (token + position, after any embedding norm);
- head `l.h`: its output `z[l, :, :, h] @ W_O[l, h]`;
- `mlpL`: the MLP's output `blocks.L.hook_mlp_out`.

Targets (what reads the residual stream, each through its own norm):
- `q` of head `l.h`: the residual stream its query is computed from;
- `k` / `v` of key/value group `l.g`: the residual stream group g's keys / values are computed
  from. In a multi-head model group g is head g; in a grouped- or multi-query model the group is
  shared by query heads g * group_size ... (g + 1) * group_size - 1, so it is one target;
- `mlp` of `mlpL`: the residual stream the MLP reads (`hook_resid_mid` in a sequential block, the
  block input in a parallel one);
- `logits`: the final residual stream (the final norm, the unembedding).

A source feeds a target when it is written before the target reads: every source of an earlier
layer and the embedding; in a sequential block also the heads of the same layer into its MLP
(in a parallel block the MLP reads the block input, so layer l's heads do not feed MLP l).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from headscope.errors import HeadscopeError
from headscope.heads import Component
from headscope.models.architecture import Architecture

SourceKind = Literal["embed", "head", "mlp"]
InputKind = Literal["q", "k", "v", "mlp", "logits"]
INPUTS: tuple[str, ...] = ("q", "k", "v", "mlp", "logits")


@dataclass(frozen=True, order=True)
class Source:
    """A component that writes into the residual stream; `layer` -1 for the embedding."""

    layer: int
    kind: SourceKind
    index: int | None = None  # the head

    @property
    def name(self) -> str:
        return "embed" if self.kind == "embed" else Component(self.layer, self.index).name


@dataclass(frozen=True, order=True)
class Target:
    """One input that reads the residual stream; `layer` n_layers for the logits."""

    layer: int
    kind: InputKind
    index: int | None = None  # the query head (q) or key/value group (k, v)

    @property
    def name(self) -> str:
        return "logits" if self.kind == "logits" else Component(self.layer, self.index).name


@dataclass(frozen=True, order=True)
class Edge:
    source: Source
    target: Target


def sources(arch: Architecture, n_layers: int) -> list[Source]:
    """Every source, in the order they write: embed, then per layer its heads and its MLP."""
    found = [Source(-1, "embed")]
    for layer in range(n_layers):
        found += [Source(layer, "head", h) for h in range(arch.n_heads)] + [Source(layer, "mlp")]
    return found


def layer_targets(arch: Architecture, layer: int) -> list[Target]:
    """The inputs of one layer: every query head, every key and value group, the MLP."""
    found = [Target(layer, "q", h) for h in range(arch.n_heads)]
    found += [Target(layer, "k", g) for g in range(arch.n_kv_heads)]
    found += [Target(layer, "v", g) for g in range(arch.n_kv_heads)]
    return found + [Target(layer, "mlp")]


def targets(arch: Architecture, n_layers: int) -> list[Target]:
    found = [t for layer in range(n_layers) for t in layer_targets(arch, layer)]
    return found + [Target(n_layers, "logits")]


def feeds(source: Source, target: Target, arch: Architecture) -> bool:
    """Whether `source` is written before `target` reads the residual stream."""
    if source.layer < target.layer:
        return True
    return (
        source.layer == target.layer and target.kind == "mlp" and source.kind == "head" and not arch.parallel
    )


def all_edges(arch: Architecture, n_layers: int) -> list[Edge]:
    """Every edge, grouped by target (targets in layer order): a new list each call."""
    return list(_edges_of(arch, n_layers))


@functools.cache
def _edges_of(arch: Architecture, n_layers: int) -> tuple[Edge, ...]:
    """Listed once per architecture (GPT-2 small has 32,491 edges; the report asks several times)."""
    every = sources(arch, n_layers)
    return tuple(Edge(s, t) for t in targets(arch, n_layers) for s in every if feeds(s, t, arch))


def parse_edge(source: str, target: str, kind: str, arch: Architecture, n_layers: int) -> Edge:
    """('1.0', '2.1', 'k') -> the edge; an error names the bad value."""
    by_name = {(e.source.name, e.target.name, e.target.kind): e for e in all_edges(arch, n_layers)}
    edge = by_name.get((source.strip(), target.strip(), kind.strip()))
    if edge is None:
        raise HeadscopeError(
            f"edge {source} -> {target} ({kind}) does not exist in this model: sources are embed, l.h, "
            "mlpL of an earlier layer; inputs are q, k, v, mlp, logits"
        )
    return edge
