"""Attention vs. logit contribution of one head (methods.md §4, seed 000's scatter).

For every prompt and role: x is the head's attention from `end` to the role's token
(summed over the token's occurrences), y is the head's output at `end` projected on the
unembedding of that token. Pearson r per role and pooled, with a seeded bootstrap interval.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor

from headscope.capture import Capture, Needs
from headscope.models.weights import Weights
from headscope.scores.attribution import unembedding_seen
from headscope.tasks.dataset import Dataset, TaskError

Scale = Literal["none", "ln_final"]
SCATTER_NEEDS = Needs(pattern_end=True, z_end=True, scale_end=True, logits_end=False)
POOLED = "pooled"


def default_roles(dataset: Dataset) -> list[str]:
    """The task's answer role and the group holding its contrast role (IOI: IO and S)."""
    task = dataset.task
    roles = [task.answer_role] if task.answer_role is not None else []
    if task.contrast_role is not None:
        groups = [g for g, members in task.role_groups.items() if task.contrast_role in members]
        roles.append(groups[0] if groups else task.contrast_role)
    if not roles:
        raise TaskError(f"task {task.name} has no answer or contrast role in its prompts; pass --roles")
    return roles


def _role_token(dataset: Dataset, role: str) -> tuple[Int[Tensor, "batch"], Tensor]:
    """The token at the role (the first present member of a group) and where it is present."""
    rows = torch.arange(dataset.n)
    token = torch.zeros(dataset.n, dtype=torch.long)
    present = torch.zeros(dataset.n, dtype=torch.bool)
    for member in reversed(dataset.role_names(role)):
        where = dataset.roles[member]
        token = torch.where(where.present, dataset.tokens[rows, where.index], token)
        present |= where.present
    return token, present


def attention_on_token(
    pattern_end: Float[Tensor, "batch pos"], tokens: Int[Tensor, "batch pos"], token: Int[Tensor, "batch"]
) -> Float[Tensor, "batch"]:
    """Attention from `end` summed over every position holding `token` (pads carry no attention)."""
    width = pattern_end.shape[-1]
    return (pattern_end * (tokens[:, :width] == token[:, None])).sum(-1)


def head_projection(
    weights: Weights,
    capture: Capture,
    head: tuple[int, int],
    token: Int[Tensor, "batch"],
    scale: Scale = "none",
) -> Float[Tensor, "batch"]:
    """(z_end @ W_O[l,h]) . W_U[:, token], no b_O; divided by the final LN scale for ln_final.

    W_U[:, token] is taken as the residual stream sees it (final-norm gain applied, centred:
    the folded W_U of TransformerLens, which the IOI analyses used), so the projection does not
    change when layer norms are folded, and with ln_final it is the head's direct logit
    contribution to the token.
    """
    layer, index = head
    z_end = capture.require("z_end", "scatter_points")
    result = z_end[:, layer, index] @ weights.W_O[layer, index]  # [batch, d_model]
    projection = (result * unembedding_seen(weights, token)).sum(-1)
    if scale == "ln_final":
        return projection / capture.require("scale_end", "scatter_points")
    return projection


def scatter_points(
    weights: Weights,
    dataset: Dataset,
    capture: Capture,
    head: tuple[int, int],
    roles: list[str],
    scale: Scale = "none",
) -> pd.DataFrame:
    """One row per prompt and role present in it: prompt, role, token, word, attention, projection."""
    layer, index = head
    frames = []
    for role in roles:
        token, present = _role_token(dataset, role)
        pattern_end = capture.require("pattern_end", "scatter_points")  # [batch, layer, head, pos]
        x = attention_on_token(pattern_end[:, layer, index], dataset.tokens, token)
        y = head_projection(weights, capture, head, token, scale)
        prompts = torch.nonzero(present).flatten()
        frames.append(
            pd.DataFrame(
                {
                    "prompt": prompts.numpy(),
                    "role": role,
                    "token": token[prompts].numpy(),
                    "word": [_word(dataset, int(i), role) for i in prompts],
                    "attention": x[prompts].double().numpy(),
                    "projection": y[prompts].double().numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _word(dataset: Dataset, prompt: int, role: str) -> str:
    fillers = dataset.prompts[prompt].fillers()
    return next((fillers[m] for m in dataset.role_names(role) if m in fillers), "")


def bootstrap_r(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Pearson r of `n_boot` resamples (with replacement) of the pairs, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), size=(n_boot, len(x)))  # [boot, n]
    xs, ys = x[picks], y[picks]
    xs = xs - xs.mean(1, keepdims=True)
    ys = ys - ys.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xs * ys).sum(1) / np.sqrt((xs * xs).sum(1) * (ys * ys).sum(1))


def _stats_row(role: str, x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict:
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # r is undefined
        return {"role": role, "r": np.nan, "p": np.nan, "n": n, "ci_low": np.nan, "ci_high": np.nan}
    result = stats.pearsonr(x, y)
    boot = bootstrap_r(x, y, n_boot, seed)
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    return {
        "role": role,
        "r": float(result.statistic),
        "p": float(result.pvalue),
        "n": n,
        "ci_low": float(low),
        "ci_high": float(high),
    }


def scatter_stats(points: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Pearson r, two-sided p, n and a bootstrap 95% interval, per role and pooled.

    The interval is the 2.5-97.5 percentile range of r over `n_boot` resamples drawn with
    `seed`; r, p and the interval are NaN where fewer than 3 points or a constant axis.
    """
    groups = [(role, part) for role, part in points.groupby("role", sort=False)]
    groups.append((POOLED, points))
    rows = [
        _stats_row(role, part["attention"].to_numpy(), part["projection"].to_numpy(), n_boot, seed)
        for role, part in groups
    ]
    return pd.DataFrame(rows)
