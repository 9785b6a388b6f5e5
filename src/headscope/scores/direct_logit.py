"""Direct logit attribution (docs/methods.md §5): each component's share of the logit difference.

The residual stream at `end` is the sum of the embeddings, every head's output, every
MLP's output and the attention output biases. The final layer norm is linear once its
scale is fixed, so with the scale taken from the same forward pass

    logit_diff = sum_c (x_c / scale) . u + (b_f . d + b_U[a] - b_U[c]),

where d = W_U[:, answer] - W_U[:, contrast] and u = centre(g_f * d) is d as seen through
the final layer norm (its gain g_f, and the centring of LayerNorm). On a model whose layer
norms are folded (g_f = 1, W_U centred) u is d itself. The constant term and the b_O terms
form the `bias` component, so the components sum exactly to the model's logit difference.

Frozen-norm convention (`Architecture.convention`, Gemma 2/3): a norm on the attention output
makes the layer's write (o / s_attn) * g_attn with o = sum_h z_h W_O[h] + b_O; with its scale
s_attn held at the clean run's value each head writes (z_h W_O[h] / s_attn) * g_attn, and the
b_O share goes to `bias`. The MLP's write is its normed output as a whole (one component), the
final norm's scale is fixed as above, and the logits are read before any soft-capping, so the
components sum exactly to the pre-cap logit difference of the same forward pass.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.capture import Capture, Needs
from headscope.heads import Component
from headscope.models.weights import Weights
from headscope.scores.intervals import t_interval
from headscope.tasks.dataset import Dataset

READER = "direct_logit_attribution"
DLA_NEEDS = Needs(
    z_end=True, mlp_end=True, embed_end=True, scale_end=True, attn_scale_end=True, logits_end=False
)


def unembedding_seen(weights: Weights, tokens: Int[Tensor, "batch"]) -> Float[Tensor, "batch d_model"]:
    """W_U[:, token] as the residual stream sees it through the final norm: gain applied and,
    for LayerNorm, centred — the column of TransformerLens's folded W_U (unchanged by folding)."""
    seen = weights.W_U[:, tokens].T * weights.lnf_w  # [batch, d_model]
    return seen - seen.mean(-1, keepdim=True) if weights.normalization == "LN" else seen


def logit_direction(weights: Weights, dataset: Dataset) -> Float[Tensor, "batch d_model"]:
    """u per prompt: (W_U[:, answer] - W_U[:, contrast]) through the final norm's gain and centring."""
    return unembedding_seen(weights, dataset.answers) - unembedding_seen(weights, dataset.contrasts)


def constant_term(weights: Weights, dataset: Dataset) -> Float[Tensor, "batch"]:
    """b_f . d + b_U[answer] - b_U[contrast]: the part of the logit difference after the norm."""
    direction = (weights.W_U[:, dataset.answers] - weights.W_U[:, dataset.contrasts]).T  # [batch, d_model]
    return direction @ weights.lnf_b + weights.b_U[dataset.answers] - weights.b_U[dataset.contrasts]


def component_names(n_layers: int, n_heads: int) -> list[str]:
    """'embed', then per layer its heads 'l.h' and 'mlpl', then 'bias' — the column order."""
    names = ["embed"]
    for layer in range(n_layers):
        names += [Component(layer, head).name for head in range(n_heads)] + [Component(layer).name]
    return [*names, "bias"]


def attribution_per_prompt(
    weights: Weights, dataset: Dataset, capture: Capture
) -> Float[Tensor, "batch component"]:
    """Every component's direct contribution to each prompt's logit difference (before any cap).

    Columns follow `component_names`; each row sums to the prompt's logit difference, with every
    norm's scale the clean run's (`Architecture.convention`: exact where it is "linear").
    """
    z_end, scale_end = capture.require("z_end", READER), capture.require("scale_end", READER)
    u = logit_direction(weights, dataset) / scale_end[:, None]  # [batch, d_model]
    head_u = _through_attn_norm(weights, capture, u)  # [batch, layer, d_model]
    results = torch.einsum("blhe,lhed->blhd", z_end, weights.W_O)  # [batch, layer, head, d_model]
    heads = torch.einsum("blhd,bld->blh", results, head_u)
    mlps = torch.einsum("bld,bd->bl", capture.require("mlp_end", READER), u)
    embed = (capture.require("embed_end", READER) * u).sum(-1)
    bias = torch.einsum("ld,bld->b", weights.b_O, head_u) + constant_term(weights, dataset)  # [batch]
    per_layer = torch.cat([heads, mlps[:, :, None]], -1)  # [batch, layer, head + 1]
    return torch.cat([embed[:, None], per_layer.flatten(1), bias[:, None]], 1)  # [batch, component]


def _through_attn_norm(
    weights: Weights, capture: Capture, u: Float[Tensor, "batch d_model"]
) -> Float[Tensor, "batch layer d_model"]:
    """u as a head's (and b_O's) write sees it through its layer's attention-output norm, the
    norm's scale frozen at the clean run's (gain, centring for LayerNorm); u itself without one."""
    per_layer = u[:, None].expand(-1, weights.n_layers, -1)  # [batch, layer, d_model]
    if weights.attn_out_w is None:
        return per_layer
    scale = capture.require("attn_scale_end", READER)  # [batch, layer]
    seen = per_layer * weights.attn_out_w / scale[:, :, None]
    if weights.normalization == "LN":
        seen = seen - seen.mean(-1, keepdim=True)
    return seen


def direct_logit_attribution(weights: Weights, dataset: Dataset, capture: Capture) -> pd.DataFrame:
    """Mean direct logit attribution per component: component, kind, layer, head, dla, convention,
    n, ci_low, ci_high, ci_kind.

    `kind` is embed, head, mlp or bias; `layer` is NA for embed and bias, `head` is NA
    for everything but heads; `convention` is the architecture's ("linear" or "frozen-norm");
    `ci_low`, `ci_high` the 95% t interval of `dla` over the `n` prompts (docs/methods.md §C).
    """
    names = component_names(weights.n_layers, weights.n_heads)
    parts = [Component.named(name) for name in names]  # None for embed and bias
    per_prompt = attribution_per_prompt(weights, dataset, capture).double()  # [batch, component]
    mean = per_prompt.mean(0)
    low, high = t_interval(per_prompt.numpy(), axis=0)
    return pd.DataFrame(
        {
            "component": names,
            "kind": [name if c is None else c.kind for name, c in zip(names, parts, strict=True)],
            "layer": pd.array([None if c is None else c.layer for c in parts], dtype="Int64"),
            "head": pd.array([None if c is None else c.head for c in parts], dtype="Int64"),
            "dla": mean.numpy(),
            "convention": convention_of(weights),
            "n": per_prompt.shape[0],
            "ci_low": low,
            "ci_high": high,
            "ci_kind": "t",
        }
    )


def convention_of(weights: Weights) -> str:
    """The architecture's convention for DLA and edges ("linear" where no record says otherwise)."""
    return weights.arch.convention if weights.arch is not None else "linear"
