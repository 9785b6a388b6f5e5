"""A forward pass, block by block, in which every target input is the residual plus its own offset.

Each target of a layer (query head, key/value group, MLP) reads `resid + offset[target]`; the
logits read `final + offset[logits]`. Zero offsets give the model's own forward (tested). Two
uses: edge attribution (the offsets are zero tensors whose gradients are the gradients of the
metric with respect to each target input) and circuit evaluation (the offset of a target is the
sum, over the edges into it that are not in the circuit, of corrupted minus current contribution).

Per layer, the block first runs on one stacked copy per attention target (and per parallel MLP),
each on its own input, and the q/k/v values (and the parallel MLP's input) are taken from the
copy that owns them; then the block runs on the residual with those values in place.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.models.architecture import Architecture
from headscope.scores.circuit import blocks, projections
from headscope.scores.circuit.graph import Target, layer_targets
from headscope.scores.interventions import InterventionRunner, rows_at


@dataclass
class RunState:
    """What the layered run has written so far: the embedding, each layer's z and MLP output."""

    embed: Tensor
    z: list[Tensor] = field(default_factory=list)
    mlp: list[Tensor] = field(default_factory=list)


OffsetFn = Callable[[list[Target], RunState], Float[Tensor, "target batch pos d_model"]]


def _copy_targets(arch: Architecture, layer: int, sequential: bool) -> list[Target]:
    return [t for t in layer_targets(arch, layer) if blocks.needs_block_run(t, sequential)]


def _taken(values: dict[str, Tensor], copies: list[Target], batch_rows: int, sequential: bool) -> dict:
    """Per hook, the activation assembled from the copies that own each slot."""
    assembled: dict[str, Tensor] = {}
    for name in dict.fromkeys(blocks.hook_name(t, sequential) for t in copies):
        act = values[name]
        per_copy = act.reshape(len(copies), batch_rows, *act.shape[1:])  # [copy, batch, pos, ...]
        owners = [(k, t) for k, t in enumerate(copies) if blocks.hook_name(t, sequential) == name]
        if owners[0][1].kind == "mlp":
            assembled[name] = per_copy[owners[0][0]]
        else:  # one slot of the head (or group) axis per owner, in slot order
            slots = sorted(owners, key=lambda item: item[1].index)
            assembled[name] = torch.stack([per_copy[k][:, :, t.index] for k, t in slots], dim=2)
    return assembled


# Per runner: whether the sliced projections matched the block's own (checked on its first layer).
_SLICED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _copy_values(
    runner: InterventionRunner, layer: int, stacked: Tensor, copies: list[Target], rows: int
) -> dict[str, Tensor]:
    """Per hook, the value assembled from the copies that own its slots: a target's q / k / v
    from its projection's rows (`projections.py`) where the runner allows it, else from the block."""
    heads = [t for t in copies if t.kind in projections.ATTENTION]  # first: layer_targets' order
    sliced = bool(heads) and copies[: len(heads)] == heads and _SLICED.get(runner) is not False
    if not sliced or projections.projections(runner, layer) is None:
        return _own_values(runner, layer, stacked, copies, rows)
    split = len(heads) * rows
    found = _sliced_values(runner, layer, stacked[:split], heads, rows)
    rest = copies[len(heads) :]  # a parallel block's MLP
    return found | (_own_values(runner, layer, stacked[split:], rest, rows) if rest else {})


def _own_values(
    runner: InterventionRunner, layer: int, stacked: Tensor, copies: list[Target], rows: int
) -> dict[str, Tensor]:
    """The values the block's own modules compute on the copies."""
    names = list(dict.fromkeys(blocks.hook_name(t, runner.sequential) for t in copies))
    return _taken(blocks.block_values(runner, layer, stacked, names), copies, rows, runner.sequential)


def _sliced_values(
    runner: InterventionRunner, layer: int, stacked: Tensor, heads: list[Target], rows: int
) -> dict[str, Tensor]:
    """The sliced values; on the runner's first layer checked against the block's own, which the
    runner keeps to from then on where they differ."""
    attn_in = projections.attention_input(runner, layer, stacked, len(heads))
    found = projections.sliced_values(runner, layer, attn_in, heads)
    if runner not in _SLICED:
        own = _own_values(runner, layer, stacked, heads, rows)
        _SLICED[runner] = projections.matches(found, own)
        return found if _SLICED[runner] else own
    return found


def _layer(
    runner: InterventionRunner,
    arch: Architecture,
    layer: int,
    resid: Tensor,
    offsets: OffsetFn,
    state: RunState,
):
    sequential, rows = runner.sequential, resid.shape[0]
    copies = _copy_targets(arch, layer, sequential)
    stacked = (resid[None] + offsets(copies, state)).flatten(0, 1)  # [copy * batch, pos, d_model]
    assembled = _copy_values(runner, layer, stacked, copies, rows)
    hooks = [(name, lambda a, hook, v=value: v) for name, value in assembled.items()]
    if sequential:
        mlp = [t for t in layer_targets(arch, layer) if t.kind == "mlp"]
        hooks.append((blocks.hook_name(mlp[0], True), lambda a, hook: a + offsets(mlp, state)[0]))
    hooks.append((f"blocks.{layer}.attn.hook_z", lambda a, hook: state.z.append(a) or a))
    hooks.append((f"blocks.{layer}.hook_mlp_out", lambda a, hook: state.mlp.append(a) or a))
    return blocks.run_block(runner, layer, resid, hooks)


def layered_logits(
    runner: InterventionRunner,
    arch: Architecture,
    resid0: Float[Tensor, "batch pos d_model"],
    end: Tensor,
    offsets: OffsetFn,
    capped: bool = True,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at `end` of the layered run from the embedding `resid0` (grad follows the caller;
    `capped` False: before the model's soft-capping)."""
    state = RunState(resid0)
    resid = resid0
    for layer in range(runner.n_layers):
        resid = _layer(runner, arch, layer, resid, offsets, state)
    final = resid + offsets([Target(runner.n_layers, "logits")], state)[0]
    return blocks.readout(runner, rows_at(final, end), capped)
