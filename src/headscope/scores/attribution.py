"""Direct logit attribution (docs/methods.md §5): each component's share of the logit difference.

The residual stream at `end` is the sum of the embeddings, every head's output, every
MLP's output and the attention output biases. The final layer norm is linear once its
scale is fixed, so with the scale taken from the same forward pass

    logit_diff = sum_c (x_c / scale) . u + (b_f . d + b_U[a] - b_U[c]),

where d = W_U[:, answer] - W_U[:, contrast] and u = centre(g_f * d) is d as seen through
the final layer norm (its gain g_f, and the centring of LayerNorm). On a model whose layer
norms are folded (g_f = 1, W_U centred) u is d itself. The constant term and the b_O terms
form the `bias` component, so the components sum exactly to the model's logit difference.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.capture import Capture, Needs
from headscope.errors import HeadscopeError
from headscope.heads import Component
from headscope.models.weights import Weights
from headscope.tasks.dataset import Dataset

READER = "direct_logit_attribution"
DLA_NEEDS = Needs(z_end=True, mlp_end=True, embed_end=True, scale_end=True, logits_end=False)


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


def check_dla_defined(weights: Weights) -> None:
    """A HeadscopeError where the logit difference is no sum of component terms (post-norms, soft-capping)."""
    refusal = weights.arch.dla_refusal if weights.arch is not None else None
    if refusal is not None:
        raise HeadscopeError(refusal)


def component_names(n_layers: int, n_heads: int) -> list[str]:
    """'embed', then per layer its heads 'l.h' and 'mlpl', then 'bias' — the column order."""
    names = ["embed"]
    for layer in range(n_layers):
        names += [Component(layer, head).name for head in range(n_heads)] + [Component(layer).name]
    return [*names, "bias"]


def attribution_per_prompt(
    weights: Weights, dataset: Dataset, capture: Capture
) -> Float[Tensor, "batch component"]:
    """Every component's direct contribution to each prompt's logit difference.

    Columns follow `component_names`; each row sums to the prompt's logit difference.
    Refused (one line naming the architecture and the reason) where no such sum exists.
    """
    check_dla_defined(weights)
    z_end, scale_end = capture.require("z_end", READER), capture.require("scale_end", READER)
    u = logit_direction(weights, dataset) / scale_end[:, None]  # [batch, d_model]
    results = torch.einsum("blhe,lhed->blhd", z_end, weights.W_O)  # [batch, layer, head, d_model]
    heads = torch.einsum("blhd,bd->blh", results, u)
    mlps = torch.einsum("bld,bd->bl", capture.require("mlp_end", READER), u)
    embed = (capture.require("embed_end", READER) * u).sum(-1)
    bias = weights.b_O.sum(0) @ u.T + constant_term(weights, dataset)  # [batch]
    per_layer = torch.cat([heads, mlps[:, :, None]], -1)  # [batch, layer, head + 1]
    return torch.cat([embed[:, None], per_layer.flatten(1), bias[:, None]], 1)  # [batch, component]


def direct_logit_attribution(weights: Weights, dataset: Dataset, capture: Capture) -> pd.DataFrame:
    """Mean direct logit attribution per component: component, kind, layer, head, dla.

    `kind` is embed, head, mlp or bias; `layer` is NA for embed and bias, `head` is NA
    for everything but heads.
    """
    names = component_names(weights.n_layers, weights.n_heads)
    parts = [Component.named(name) for name in names]  # None for embed and bias
    mean = attribution_per_prompt(weights, dataset, capture).double().mean(0)
    return pd.DataFrame(
        {
            "component": names,
            "kind": [name if c is None else c.kind for name, c in zip(names, parts, strict=True)],
            "layer": pd.array([None if c is None else c.layer for c in parts], dtype="Int64"),
            "head": pd.array([None if c is None else c.head for c in parts], dtype="Int64"),
            "dla": mean.numpy(),
        }
    )
