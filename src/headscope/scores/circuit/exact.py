"""Exact edge patching: the metric with one edge's source replaced, for that one target input,
by its value on the corrupted prompt; every other input of the model unchanged.

Patched input = clean input - clean contribution + corrupted contribution; the target's norm
recomputes its statistics on it (path patching, Wang et al. 2022). Batched like the knockout
sweep (`scores/interventions.py`): per target layer, one stacked run of that block on every needed
source's patched input gives the patched q/k/v (and a parallel MLP's input); then each edge is a
copy in a stacked pass resumed from the clean residual at the target's layer. Logit edges need
only the final norm and the unembedding. `reference_edge_sum` does the same one edge at a time with
complete forward passes and plain hooks, to check and time the batched path against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from headscope.scores import interventions
from headscope.scores.circuit import blocks
from headscope.scores.circuit.activations import Acts
from headscope.scores.circuit.blocks import Replacement
from headscope.scores.circuit.graph import Edge, Source, Target
from headscope.scores.interventions import Batch, InterventionRunner
from headscope.scores.metric import logit_diff


def _per_pass(batch: Batch) -> int:
    return max(1, interventions.MAX_ROWS // batch.tokens.shape[0])


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _metric_per_copy(logits: Tensor, batch: Batch, copies: int) -> Tensor:
    """The metric of each copy on each prompt of the batch: [copy, batch] (float32)."""
    metric = logit_diff(logits.float().cpu(), batch.answers.repeat(copies), batch.contrasts.repeat(copies))
    return metric.reshape(copies, -1)  # [copy * batch] -> [copy, batch]


def _block_values(
    runner: InterventionRunner,
    clean: Acts,
    deltas: dict[Source, Tensor],
    layer: int,
    needed: list[Source],
    names,
    batch,
) -> dict[Source, dict[str, Tensor]]:
    """Per source: the hooked values of block `layer` run on clean input + that source's delta."""
    found: dict[Source, dict[str, Tensor]] = {}
    rows = batch.tokens.shape[0]
    for chunk in _chunks(needed, _per_pass(batch)):
        patched = torch.cat([clean.pre[layer] + deltas[s] for s in chunk])  # [copy * batch, pos, d_model]
        with torch.no_grad():
            values = blocks.block_values(runner, layer, patched, names)
        for k, source in enumerate(chunk):
            found[source] = {n: values[n][k * rows : (k + 1) * rows] for n in names}
    return found


def _replacement(edge: Edge, clean: Acts, deltas, values, sequential: bool) -> Replacement:
    target = edge.target
    name = blocks.hook_name(target, sequential)
    if not blocks.needs_block_run(target, sequential):  # a sequential MLP reads resid_mid itself
        return Replacement(name, None, clean.mid[target.layer] + deltas[edge.source])
    return Replacement(name, target.index if target.kind != "mlp" else None, values[edge.source][name])


def _layer_rows(runner, clean: Acts, deltas, edges: list[Edge], batch: Batch, capped: bool) -> Tensor:
    layer, sequential = edges[0].target.layer, runner.sequential
    run_edges = [e for e in edges if blocks.needs_block_run(e.target, sequential)]
    names = list(dict.fromkeys(blocks.hook_name(e.target, sequential) for e in run_edges))
    needed = list(dict.fromkeys(e.source for e in run_edges))
    values = _block_values(runner, clean, deltas, layer, needed, names, batch) if needed else {}
    rows = []
    for chunk in _chunks(edges, _per_pass(batch)):
        replacements = [_replacement(e, clean, deltas, values, sequential) for e in chunk]
        hooks = blocks.stacked_hooks(replacements, batch.tokens.shape[0])
        resid = clean.pre[layer].repeat(len(chunk), 1, 1)  # [copy * batch, pos, d_model]
        logits = runner.run(resid, layer, batch.end.repeat(len(chunk)), hooks, capped)
        rows.append(_metric_per_copy(logits, batch, len(chunk)))
    return torch.cat(rows)  # [edge, batch]


def _logit_rows(runner, clean: Acts, deltas, edges: list[Edge], batch: Batch, capped: bool) -> Tensor:
    final = interventions.rows_at(clean.post, batch.end)  # [batch, d_model]
    rows = []
    for chunk in _chunks(edges, _per_pass(batch)):
        patched = torch.cat([final + interventions.rows_at(deltas[e.source], batch.end) for e in chunk])
        with torch.no_grad():
            logits = blocks.readout(runner, patched, capped)  # [copy * batch, d_vocab]
        rows.append(_metric_per_copy(logits, batch, len(chunk)))
    return torch.cat(rows)  # [edge, batch]


def exact_sums(
    runner: InterventionRunner,
    clean: Acts,
    deltas: dict[Source, Tensor],
    edges: list[Edge],
    batch: Batch,
    capped: bool = True,
) -> Tensor:
    """Sum over the batch's prompts of the metric with each edge patched: [edge] (float64); with
    `capped` False, of the logits before soft-capping (frozen-scale patching: the caller holds
    the norms' scales, `norms.frozen`, and passes the frozen-norm deltas)."""
    return exact_per_prompt(runner, clean, deltas, edges, batch, capped).sum(1).double()


def exact_per_prompt(
    runner: InterventionRunner,
    clean: Acts,
    deltas: dict[Source, Tensor],
    edges: list[Edge],
    batch: Batch,
    capped: bool = True,
) -> Tensor:
    """The metric with each edge patched on each prompt of the batch: [edge, batch] (float32);
    `exact_sums` is its sum over the batch."""
    out = torch.zeros(len(edges), batch.tokens.shape[0], dtype=torch.float32)
    by_layer: dict[int, list[int]] = {}
    for i, edge in enumerate(edges):
        by_layer.setdefault(edge.target.layer, []).append(i)
    for _, index in sorted(by_layer.items()):
        chosen = [edges[i] for i in index]
        part = _logit_rows if chosen[0].target.kind == "logits" else _layer_rows
        out[index] = part(runner, clean, deltas, chosen, batch, capped)
    return out


# ---- the straightforward way: complete forward passes, one edge at a time -------------------


def _run_metric(bridge, batch: Batch, hooks) -> float:
    with torch.no_grad():
        logits = bridge.run_with_hooks(batch.tokens.to(bridge.cfg.device), fwd_hooks=hooks)
    return float(interventions.end_metric(interventions.rows_at(logits, batch.end), batch).sum())


def _reference_value(bridge, batch: Batch, target: Target, patched: Tensor, name: str) -> Tensor:
    """The value at hook `name` of block target.layer when its input is `patched` (a full forward
    up to that block with the block's input replaced)."""
    kept = {}
    hooks = [
        (f"blocks.{target.layer}.hook_resid_pre", lambda a, hook: patched.to(a)),
        (name, lambda a, hook: kept.setdefault("value", a)),
    ]
    with torch.no_grad():
        bridge.run_with_hooks(
            batch.tokens.to(bridge.cfg.device), fwd_hooks=hooks, stop_at_layer=target.layer + 1
        )
    return kept["value"]


def reference_edge_sum(
    runner: InterventionRunner, clean: Acts, delta: Tensor, edge: Edge, batch: Batch
) -> float:
    """One edge patched with complete forward passes and plain hooks (sum over the batch)."""
    bridge, target, sequential = runner.bridge, edge.target, runner.sequential
    if target.kind == "logits":
        hook = ("ln_final.hook_in", lambda a, hook: (clean.post + delta).to(a))
        return _run_metric(bridge, batch, [hook])
    name = blocks.hook_name(target, sequential)
    if not blocks.needs_block_run(target, sequential):
        value = (clean.mid[target.layer] + delta).clone()
        return _run_metric(bridge, batch, [(name, lambda a, hook: value.to(a))])
    value = _reference_value(bridge, batch, target, clean.pre[target.layer] + delta, name)
    index = target.index if target.kind != "mlp" else None

    def replace(act: Tensor, hook) -> Tensor:
        out = act.clone()
        if index is None:
            return value.to(act)
        out[:, :, index] = value[:, :, index].to(act)
        return out

    return _run_metric(bridge, batch, [(name, replace)])
