"""Running single blocks of a bridge: hook names of the target inputs, captured values, readout.

Each target input is replaced where the model computes from it, so every family's own norm,
projections, rotary, q/k norms and key/value grouping apply unchanged:
- q / k / v: `attn.hook_q` / `hook_k` / `hook_v` (per query head, per key/value group), taken
  from a run of the block on the target's residual input (its norm recomputes its statistics);
- the MLP of a sequential block: `ln2.hook_in`, the residual the MLP's norm reads;
- the MLP of a parallel block: `mlp.hook_in` (its norm's output), from a run of the block on the
  target's residual input (some parallel families share one norm between attention and MLP);
- the logits: the final residual stream, through the model's final norm, unembedding and output
  transform (Gemma's soft-capping).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from headscope.errors import HeadscopeError
from headscope.scores.circuit.graph import Target
from headscope.scores.interventions import InterventionRunner, _expanded


def hook_name(target: Target, sequential: bool) -> str:
    """The hook at which a target's input (or what is computed from it) is replaced."""
    if target.kind == "mlp":
        return f"blocks.{target.layer}.{'ln2.hook_in' if sequential else 'mlp.hook_in'}"
    return f"blocks.{target.layer}.attn.hook_{target.kind}"


def needs_block_run(target: Target, sequential: bool) -> bool:
    """Whether the replaced value comes from a run of the block (not the residual itself)."""
    return target.kind in ("q", "k", "v") or (target.kind == "mlp" and not sequential)


def check_hooks(runner: InterventionRunner) -> None:
    if runner.sequential and "blocks.0.ln2.hook_in" not in runner.bridge.hook_dict:
        raise HeadscopeError(
            "edge-level circuits need the MLP's norm input (blocks.L.ln2.hook_in), which this model's "
            "bridge does not have: this architecture is not supported for circuits"
        )


class _Collected(Exception):
    """Every value a block run was asked for is kept: the rest of the block is not needed."""


def block_values(
    runner: InterventionRunner, layer: int, resid: Float[Tensor, "rows pos d_model"], names: list[str]
) -> dict[str, Tensor]:
    """The values at hooks `names` when block `layer` runs on `resid` (grad follows the caller).

    The run stops once the last of them is computed (q/k/v come before the attention pattern and
    the MLP), so a stacked copy per target costs the norm and the projections, not the block."""
    kept: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable:
        def keep(act: Tensor, hook) -> Tensor:
            kept[name] = act
            if len(kept) == len(names):
                raise _Collected
            return act

        return keep

    bridge = runner.bridge
    with bridge.hooks(fwd_hooks=[(name, keeper(name)) for name in names]):
        args, kwargs = _expanded(runner.call_args, runner.call_kwargs, resid.shape[0] // runner.base_rows)
        with contextlib.suppress(_Collected):
            bridge.blocks[layer](resid, *args, **kwargs)
    return kept


def run_block(
    runner: InterventionRunner, layer: int, resid: Tensor, hooks: list[tuple[str, Callable]]
) -> Tensor:
    """Block `layer`'s output residual on `resid` with `hooks` active."""
    bridge = runner.bridge
    with bridge.hooks(fwd_hooks=hooks):
        args, kwargs = _expanded(runner.call_args, runner.call_kwargs, resid.shape[0] // runner.base_rows)
        out = bridge.blocks[layer](resid, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def readout(
    runner: InterventionRunner, final: Float[Tensor, "rows d_model"], capped: bool = True
) -> Float[Tensor, "rows d_vocab"]:
    """Logits of final residual vectors: final norm, unembedding, the model's output transform
    (`capped`; without it, the logits before Gemma 2's soft-capping)."""
    bridge = runner.bridge
    logits = bridge.unembed(bridge.ln_final(final[:, None]))  # [rows, 1, d_vocab]
    return (bridge.adapter.apply_output_logits_transform(logits) if capped else logits)[:, 0]


@dataclass(frozen=True)
class Replacement:
    """Copy k of a stacked pass gets `value` at hook `hook` (slot `index` of the head axis, or all)."""

    hook: str
    index: int | None
    value: Tensor  # [batch, pos, ...] the activation at the hook for this copy


def stacked_hooks(replacements: list[Replacement], batch_rows: int) -> list[tuple[str, Callable]]:
    """Hooks for a pass of len(replacements) stacked copies (copy-major) of a batch."""

    def hook_for(name: str) -> Callable:
        def hook(act: Tensor, hook) -> Tensor:
            per_copy = act.reshape(
                len(replacements), batch_rows, *act.shape[1:]
            ).clone()  # [copy, batch, ...]
            for k, r in enumerate(replacements):
                if r.hook != name:
                    continue
                if r.index is None:
                    per_copy[k] = r.value.to(act)
                else:
                    per_copy[k][:, :, r.index] = r.value[:, :, r.index].to(act)
            return per_copy.reshape(act.shape)

        return hook

    return [(name, hook_for(name)) for name in dict.fromkeys(r.hook for r in replacements)]
