"""Norms on the residual stream's writes, and the frozen-norm convention (docs/methods.md §9).

Where a norm acts on the attention output (Gemma 2/3: `ln1_post`), layer l writes
post(o) = norm(o) * g with o = sum_h z_h W_O[h] + b_O, and no head's write is separable. Two
definitions of a head's corrupted - clean write follow, both exact for one head alone:

- real (the `exact` column): the sender's output patched inside the real model, its layer's
  norm recomputed: post(o_clean + (z_corr,h - z_clean,h) W_O[h]) - post(o_clean). Every set of
  heads of one layer patched together is the same formula with the sum of their differences;
  all of them give the corrupted layer's write.
- frozen-norm (EAP, EAP-IG, frozen-scale patching): the norm's scale s held at the clean run's,
  so post is linear: (centre((z_corr,h - z_clean,h) W_O[h]) / s_clean) * g.

The MLP of such a block is one source; its write is its normed output either way. Under the
frozen-norm convention every norm that reads or writes the residual stream (each block's input
norms, the output norms, the final norm) takes its clean-run scale through a forward hook on its
`hook_scale` (TransformerLens's convention), and the logits are read before any soft-capping.
Norms inside a head (Gemma 3's q/k norms) belong to the head's own function, like its softmax,
and recompute.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.models.weights import Weights, centred
from headscope.scores.interventions import rows_at

RESIDUAL_NORMS: tuple[str, ...] = ("ln1", "ln2", "ln1_post", "ln2_post")


def scale_hook_names(bridge, n_layers: int) -> list[str]:
    """The `hook_scale` of every norm on the residual stream this bridge has."""
    names = [f"blocks.{layer}.{norm}.hook_scale" for layer in range(n_layers) for norm in RESIDUAL_NORMS]
    return [n for n in [*names, "ln_final.hook_scale"] if n in bridge.hook_dict]


@dataclass(frozen=True)
class FrozenScales:
    """One batch's clean-run norm scales, and the prompts' `end` (a readout normalises end rows)."""

    scales: dict[str, Float[Tensor, "batch pos 1"]]
    end: Int[Tensor, "batch"]

    def value(self, name: str, act: Float[Tensor, "rows width 1"]) -> Tensor:
        """The clean scale for `act`: stacked copies repeat the batch; one row per prompt where
        the norm sees the end rows only."""
        clean = self.scales[name]
        if act.shape[1] != clean.shape[1]:
            clean = rows_at(clean, self.end)[:, None]  # [batch, 1, 1]
        return clean.repeat(act.shape[0] // clean.shape[0], 1, 1).to(act)

    def hooks(self) -> list[tuple[str, Callable]]:
        return [(name, lambda act, hook, name=name: self.value(name, act)) for name in self.scales]


@contextlib.contextmanager
def frozen(bridge, scales: FrozenScales | None) -> Iterator[None]:
    """Every residual-stream norm of `bridge` at its clean-run scale inside the block (none: as is)."""
    if scales is None:
        yield
        return
    with warnings.catch_warnings(), bridge.hooks(fwd_hooks=scales.hooks()):
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
        yield


def _attn_input(
    z: Float[Tensor, "batch pos head d_head"], weights: Weights, layer: int
) -> Float[Tensor, "head batch pos d_model"]:
    return torch.einsum("bphe,hed->hbpd", z, weights.W_O[layer].to(z))


def _post(o: Float[Tensor, "... d_model"], weights: Weights, layer: int) -> Tensor:
    """The attention-output norm of `layer` (recomputing its statistics), gain applied."""
    x = centred(o, weights.normalization)
    scale = (x.pow(2).mean(-1, keepdim=True) + weights.eps).sqrt()
    return x / scale * weights.attn_out_w[layer].to(o)


def attn_scale(o: Float[Tensor, "... d_model"], weights: Weights) -> Float[Tensor, "... 1"]:
    x = centred(o, weights.normalization)
    return (x.pow(2).mean(-1, keepdim=True) + weights.eps).sqrt()


def attn_sum(z: Float[Tensor, "batch pos head d_head"], weights: Weights, layer: int) -> Tensor:
    """o = sum_h z_h W_O[h] + b_O: what the attention-output norm of `layer` reads."""
    return _attn_input(z, weights, layer).sum(0) + weights.b_O[layer].to(z)


def real_head_deltas(
    clean_z: Tensor, corrupted_z: Tensor, weights: Weights, layer: int
) -> Float[Tensor, "head batch pos d_model"]:
    """Per head: the layer's write with that head's z corrupted, the norm recomputed, minus clean."""
    o = attn_sum(clean_z, weights, layer)  # [batch, pos, d_model]
    diff = _attn_input(corrupted_z, weights, layer) - _attn_input(clean_z, weights, layer)
    return _post(o[None] + diff, weights, layer) - _post(o, weights, layer)[None]


def frozen_head_deltas(
    clean_z: Tensor, corrupted_z: Tensor, weights: Weights, layer: int
) -> Float[Tensor, "head batch pos d_model"]:
    """Per head: (corrupted - clean) write through the norm with the clean run's scale."""
    scale = attn_scale(attn_sum(clean_z, weights, layer), weights)  # [batch, pos, 1]
    diff = _attn_input(corrupted_z, weights, layer) - _attn_input(clean_z, weights, layer)
    return centred(diff, weights.normalization) / scale * weights.attn_out_w[layer].to(diff)


def recomputed_offsets(
    current: Float[Tensor, "head copy batch pos d_model"],
    donor: Float[Tensor, "head batch pos d_model"],
    weights: Tensor,
    model_weights: Weights,
    layer: int,
) -> Float[Tensor, "target copy batch pos d_model"]:
    """Per target and copy: the layer's write with the heads `weights[copy, target, head]` = 1
    taking the donor's z W_O, the norm recomputed, minus the layer's write in this run."""
    o = current.sum(0) + model_weights.b_O[layer].to(current)  # [copy, batch, pos, d_model]
    diff = torch.einsum("cth,hcbpd->tcbpd", weights.to(current), donor[:, None] - current)
    return _post(o[None] + diff, model_weights, layer) - _post(o, model_weights, layer)[None]
