"""Attention vs. logit contribution of one head (docs/methods.md §4).

For every prompt and role: x is the head's attention from `end` to the role's token
(summed over the token's occurrences), y is the head's output at `end` projected on the
unembedding of that token. Pearson r per role (the figure of the IOI paper), with a seeded
BCa bootstrap interval over prompts; pooled r only with a warning when the roles form
separate clusters (then it measures the clusters, not the head: Simpson's paradox).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor

from headscope.capture import Capture, Needs
from headscope.errors import HeadscopeError
from headscope.models.weights import Weights, head_output_map
from headscope.scores.direct_logit import unembedding_seen
from headscope.tasks.dataset import Dataset, TaskError

Scale = Literal["none", "ln_final"]
SCATTER_NEEDS = Needs(pattern_end=True, z_end=True, scale_end=True, logits_end=False)
POOLED = "pooled"
CLUSTER_SHARE = 0.5  # pooled r carries a warning when this share of it lies between the roles


def default_roles(dataset: Dataset) -> list[str]:
    """The task's answer role and the group holding its contrast role (IOI: IO and S)."""
    task = dataset.task
    roles = [task.answer_role] if task.answer_role is not None else []
    if task.contrast_role is not None:
        groups = [g for g, members in task.role_groups.items() if task.contrast_role in members]
        roles.append(groups[0] if groups else task.contrast_role)
    if not roles:
        raise TaskError(
            f"roles=None: task {task.name} has no answer or contrast role in its prompts; name the roles"
        )
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
    if scale == "ln_final" and weights.attn_out_w is not None:
        raise HeadscopeError(
            f"scale='ln_final' is not defined for {weights.arch.family}: a norm acts on the attention output "
            "before the residual stream, so a head's direct logit contribution needs that norm's scale too; "
            "use scale='none'"
        )
    z_end = capture.require("z_end", "scatter_points")
    # W_O as the residual stream sees it: through the attention output norm's gain where there is one
    W_O = head_output_map(weights, torch.tensor([layer]), torch.tensor([index]))[0]  # [d_head, d_model]
    result = z_end[:, layer, index] @ W_O  # [batch, d_model]
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
    for role in check_roles(dataset, roles):
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


def check_roles(dataset: Dataset, roles: list[str]) -> list[str]:
    """`roles` when no token is counted twice; a repeated role or a role inside a group given too
    (IO,IO or S1,S) would put the same points in twice, so it is refused."""
    seen: dict[str, str] = {}
    for role in roles:
        for member in dataset.role_names(role):
            if member in seen:
                given = (
                    f"{role} is given twice" if seen[member] == role else f"{seen[member]} and {role} overlap"
                )
                raise TaskError(
                    f"roles {','.join(roles)}: {given} ({member}), so its points would count twice; "
                    f"give each token's role once{_example(dataset)}"
                )
            seen[member] = role
    return list(roles)


def _example(dataset: Dataset) -> str:
    try:
        return ", e.g. " + ",".join(default_roles(dataset))
    except TaskError:
        return ""


def _cluster_sums(points: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Per prompt (the resampling unit): count, sum x, sum y, sum x^2, sum y^2, sum xy.

    The axes are centred first (r does not change), so the sums lose no precision.
    """
    x = points["attention"].to_numpy(float)
    y = points["projection"].to_numpy(float)
    frame = pd.DataFrame({"prompt": points["prompt"].to_numpy(), "x": x - x.mean(), "y": y - y.mean()})
    frame = frame.assign(one=1.0, xx=frame.x * frame.x, yy=frame.y * frame.y, xy=frame.x * frame.y)
    sums = frame.groupby("prompt", sort=True)[["one", "x", "y", "xx", "yy", "xy"]].sum()
    return tuple(sums[column].to_numpy() for column in sums.columns)


def r_of_sums(count, sx, sy, sxx, syy, sxy, axis: int = -1) -> np.ndarray:
    """Pearson r of the points behind per-cluster sums (resampled along `axis`)."""
    n, mx, my = count.sum(axis), sx.sum(axis), sy.sum(axis)
    cov = sxy.sum(axis) - mx * my / n
    vx, vy = sxx.sum(axis) - mx * mx / n, syy.sum(axis) - my * my / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(vx * vy)


def bootstrap_interval(points: pd.DataFrame, n_boot: int, seed: int) -> tuple[float, float]:
    """95% BCa bootstrap interval of Pearson r, resampling prompts (all of a prompt's points
    together), drawn with `seed` by scipy.stats.bootstrap; NaN when it is undefined."""
    sums = _cluster_sums(points)
    if len(sums[0]) < 3:
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples give NaN, reported as such
        result = stats.bootstrap(
            sums,
            r_of_sums,
            n_resamples=n_boot,
            paired=True,
            vectorized=True,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def between_share(points: pd.DataFrame) -> float:
    """How much of the pooled r lies between the roles' clusters rather than within them.

    The pooled r splits exactly into a within-role part W = sum (x - mx_role)(y - my_role) / D
    and a between-role part B = sum (mx_role - mx)(my_role - my) / D, D = sqrt(Sxx Syy);
    the share is |B| / (|W| + |B|). Near 1 the roles sit apart and the pooled r measures the
    distance between the clusters, whatever each role shows on its own (Simpson's paradox).
    """
    x, y = points["attention"].to_numpy(float), points["projection"].to_numpy(float)
    by_role = points.groupby("role", sort=False)
    mx = by_role["attention"].transform("mean").to_numpy()
    my = by_role["projection"].transform("mean").to_numpy()
    within = abs(((x - mx) * (y - my)).sum())
    between = abs(((mx - x.mean()) * (my - y.mean())).sum())
    return float(between / (within + between)) if within + between > 0 else np.nan


def _undefined(x: np.ndarray, y: np.ndarray) -> str:
    if len(x) < 3:
        return f"r undefined: {len(x)} point(s), it needs 3 or more"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return f"r undefined: every point has the same {'attention' if np.ptp(x) == 0 else 'projection'}"
    return ""


def _stats_row(role: str, part: pd.DataFrame, n_boot: int, seed: int) -> dict:
    x, y = part["attention"].to_numpy(float), part["projection"].to_numpy(float)
    row = {"role": role, "r": np.nan, "p": np.nan, "n": len(x), "ci_low": np.nan, "ci_high": np.nan}
    row |= {"between_share": np.nan, "note": _undefined(x, y)}
    if row["note"]:
        return row
    result = stats.pearsonr(x, y)
    low, high = bootstrap_interval(part, n_boot, seed)
    return row | {"r": float(result.statistic), "p": float(result.pvalue), "ci_low": low, "ci_high": high}


def _pooled_row(points: pd.DataFrame, n_boot: int, seed: int, cluster_share: float) -> dict:
    row = _stats_row(POOLED, points, n_boot, seed)
    share = between_share(points) if points["role"].nunique() > 1 and not row["note"] else np.nan
    row["between_share"] = share
    if share >= cluster_share:
        row["note"] = (
            f"warning: the roles form separate clusters ({share:.0%} of the pooled r comes from the "
            f"distance between the roles' means, >= {cluster_share:.0%}); it says little about any "
            "role: read the per-role r"
        )
    return row


def scatter_stats(
    points: pd.DataFrame, n_boot: int = 1000, seed: int = 0, cluster_share: float = CLUSTER_SHARE
) -> pd.DataFrame:
    """Per role, then pooled: Pearson r, two-sided p, n, a 95% bootstrap interval, a note.

    The interval is scipy's BCa bootstrap over `n_boot` resamples of the prompts drawn with
    `seed` (a prompt's points stay together, so the pooled interval does not count one prompt's
    roles as independent). The pooled row carries `between_share` (see `between_share`) and a
    warning in `note` when it is at least `cluster_share`; r, p and the interval are NaN with
    the reason in `note` where fewer than 3 points or a constant axis leave r undefined.

    Args:
        points: from `hs.scatter` (or `scatter_points`): prompt, role, attention, projection.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        cluster_share: the pooled row warns when the between-role share reaches this.

    Returns:
        One row per role, then `pooled`: role, r, p, n, ci_low, ci_high, between_share, note.

    Example:
        >>> points = hs.scatter(model, "ioi", head="1.0", n=50)
        >>> hs.scatter_stats(points, n_boot=2000, seed=1)
    """
    rows = [_stats_row(str(role), part, n_boot, seed) for role, part in points.groupby("role", sort=False)]
    rows.append(_pooled_row(points, n_boot, seed, cluster_share))
    return pd.DataFrame(rows)
