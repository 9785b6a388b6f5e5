"""The q / k / v value of one head (or key/value group) for a layered pass's stacked copies.

A layered pass gives every attention target of a layer its own residual input, so it runs the
block's first steps on one copy of the batch per target. Through the block's own modules each
copy computes every head's queries, keys and values and keeps one head's (GPT-2 small: 36 copies,
each computing all 36 heads' and groups' projections). Here each copy runs only to the attention
input (`attn.hook_in`: the block's own norm, its statistics recomputed per copy) and its target's
value is that input times the target's rows of the model's own projection (`attn.q` / `k` / `v`,
an `nn.Linear`): 1 / (heads + 2 groups) of the work, the same numbers (a product's column block).

Where a model's hooks do not have that shape (a projection that is not an `nn.Linear`, a
`hook_q` that is not the projection's output), or the sliced values do not match the block's own
within float tolerance on the first layer a runner computes, every layer of that runner takes the
block's own path (`blocks.block_values`), as before.
"""

from __future__ import annotations

import weakref

import torch
from jaxtyping import Float
from torch import Tensor, nn

from headscope.scores.circuit import blocks
from headscope.scores.circuit.graph import Target
from headscope.scores.interventions import InterventionRunner

ATTENTION = ("q", "k", "v")


def projections(runner: InterventionRunner, layer: int) -> dict[str, nn.Linear] | None:
    """The model's own q / k / v projections of `layer` where each hook_{kind} is its projection's
    output and the attention input has a hook; else None (looked up once per runner)."""
    per_layer = _FOUND.setdefault(runner, {})
    if layer not in per_layer:
        per_layer[layer] = _looked_up(runner, layer)
    return per_layer[layer]


_FOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _looked_up(runner: InterventionRunner, layer: int) -> dict[str, nn.Linear] | None:
    hooks, attention = runner.bridge.hook_dict, runner.bridge.blocks[layer].attn
    if f"blocks.{layer}.attn.hook_in" not in hooks:
        return None
    found = {}
    for kind in ATTENTION:
        linear = getattr(getattr(attention, kind, None), "original_component", None)
        output = hooks.get(f"blocks.{layer}.attn.{kind}.hook_out")
        if (
            not isinstance(linear, nn.Linear)
            or output is None
            or hooks.get(f"blocks.{layer}.attn.hook_{kind}") is not output
        ):
            return None
        found[kind] = linear
    return found


def sliced_values(
    runner: InterventionRunner,
    layer: int,
    attn_in: Float[Tensor, "copy batch pos d_model"],
    copies: list[Target],
) -> dict[str, Tensor]:
    """Per hook_q / hook_k / hook_v, [batch, pos, slot, d_head]: slot i from copy i's input."""
    d_head, linears = runner.bridge.cfg.d_head, projections(runner, layer)
    found: dict[str, list[tuple[int, Tensor]]] = {}
    for k, target in enumerate(copies):
        linear = linears[target.kind]
        rows = slice(target.index * d_head, (target.index + 1) * d_head)
        bias = None if linear.bias is None else linear.bias[rows]
        value = nn.functional.linear(attn_in[k], linear.weight[rows], bias)  # [batch, pos, d_head]
        found.setdefault(blocks.hook_name(target, True), []).append((target.index, value))
    return {
        name: torch.stack([v for _, v in sorted(slots, key=lambda s: s[0])], 2)
        for name, slots in found.items()
    }


def attention_input(
    runner: InterventionRunner, layer: int, stacked: Float[Tensor, "rows pos d_model"], n_copies: int
) -> Float[Tensor, "copy batch pos d_model"]:
    name = f"blocks.{layer}.attn.hook_in"
    found = blocks.block_values(runner, layer, stacked, [name])[name]
    return found.reshape(n_copies, -1, *found.shape[1:])  # [copy, batch, pos, d_model]


def matches(sliced: dict[str, Tensor], own: dict[str, Tensor]) -> bool:
    """The sliced values equal the block's own within float32 rounding of a d_model-term sum."""
    for name, value in own.items():
        other = sliced.get(name)
        if other is None or other.shape != value.shape:
            return False
        scale = value.detach().abs().max().clamp(min=1e-30)
        if (other.detach() - value.detach()).abs().max() > 1e-4 * scale:
            return False
    return True
