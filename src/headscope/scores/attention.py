"""Attention scores (docs/methods.md §3): role-to-role attention and the head detectors.

Role-to-role attention reads `capture.pattern_roles` (query rows at every role); the
previous-token, duplicate-token and induction detectors read `capture.pattern_full`.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from headscope.capture import Capture, Needs
from headscope.scores.intervals import cluster_bootstrap_share, t_interval
from headscope.tasks.dataset import Dataset

ROLE_ATTENTION_NEEDS = Needs(pattern_roles=True, logits_end=False)
DETECTOR_NEEDS = Needs(pattern_full=True, logits_end=False)
DETECTORS: tuple[str, ...] = ("previous_token", "duplicate_token", "induction")
ENTROPY_NEEDS = Needs(pattern_end=True, logits_end=False)


def end_entropy(dataset: Dataset, capture: Capture) -> pd.DataFrame:
    """Mean entropy (nats) of each head's attention row at `end`: `layer, head, entropy, n`, and
    `ci_low`, `ci_high` its 95% t interval over the n prompts (docs/methods.md §C)."""
    rows = capture.require("pattern_end", "end_entropy").double()  # [batch, layer, head, pos], 0 past end
    per_prompt = -torch.xlogy(rows, rows).sum(-1)  # [batch, layer, head]; 0 log 0 = 0
    entropy = per_prompt.mean(0)  # [layer, head]
    layer, head = torch.meshgrid(
        torch.arange(entropy.shape[0]), torch.arange(entropy.shape[1]), indexing="ij"
    )
    table = {"layer": layer.flatten().numpy(), "head": head.flatten().numpy()}
    low, high = t_interval(per_prompt.flatten(1).numpy(), axis=0)  # [layer * head]
    intervals = {"ci_low": low, "ci_high": high, "ci_kind": "t"}
    return pd.DataFrame(table | {"entropy": entropy.flatten().numpy(), "n": dataset.n} | intervals)


def key_roles(dataset: Dataset) -> dict[str, tuple[str, ...]]:
    """Every key role with the roles it sums: each role alone, then each group (S -> S1, S2)."""
    single = {name: (name,) for name in sorted(dataset.roles)}
    groups = {
        name: members
        for name, members in sorted(dataset.task.role_groups.items())
        if all(member in dataset.roles for member in members)
    }
    return single | groups


def _key_attention(
    rows: Float[Tensor, "batch layer head pos"], dataset: Dataset, members: tuple[str, ...]
) -> tuple[Float[Tensor, "batch layer head"], Bool[Tensor, "batch"]]:
    """Attention on the present members of a key role, summed; present where any member is."""
    batch = torch.arange(rows.shape[0])
    total = torch.zeros(rows.shape[:3])
    present = torch.zeros(rows.shape[0], dtype=torch.bool)
    for member in members:
        where = dataset.roles[member]
        on_member = rows[batch, :, :, where.index]  # [batch, layer, head]
        total += on_member * where.present[:, None, None]
        present |= where.present
    return total, present


def role_attention(dataset: Dataset, capture: Capture) -> pd.DataFrame:
    """Mean attention from each query role to each key role (groups summed), every head.

    Columns `layer, head, query_role, key_role, attention, n, ci_low, ci_high, ci_kind`; the mean
    runs over the prompts where both roles are present (`n` of them), `ci_low`, `ci_high` its 95%
    t interval over them (docs/methods.md §C). A group is present where any of its members is,
    and its attention sums the members present in the prompt.
    """
    patterns = capture.require("pattern_roles", "role_attention")  # [batch, layer, head, role, pos]
    n_layers, n_heads = patterns.shape[1], patterns.shape[2]
    layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
    frames = []
    for q_index, query in enumerate(capture.role_names):
        rows = patterns[:, :, :, q_index]  # [batch, layer, head, pos]
        for key, members in key_roles(dataset).items():
            attention, key_present = _key_attention(rows, dataset, members)
            both = dataset.roles[query].present & key_present
            mean = attention[both].mean(0) if both.any() else torch.full((n_layers, n_heads), float("nan"))
            frame = _role_frame(layer, head, query, key, mean, int(both.sum()))
            low, high = t_interval(attention[both].flatten(1).double().numpy(), axis=0)  # [layer * head]
            frames.append(frame.assign(ci_low=low, ci_high=high, ci_kind="t"))
    return pd.concat(frames, ignore_index=True)


def _role_frame(layer: Tensor, head: Tensor, query: str, key: str, mean: Tensor, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": layer.flatten().numpy(),
            "head": head.flatten().numpy(),
            "query_role": query,
            "key_role": key,
            "attention": mean.flatten().double().numpy(),
            "n": n,
        }
    )


def ideal_patterns(
    tokens: Int[Tensor, "batch pos"], lengths: Int[Tensor, "batch"]
) -> dict[str, Bool[Tensor, "batch pos pos"]]:
    """The 0/1 ideal pattern of each detector, [batch, query, key], lower triangle, real positions.

    previous_token: key = query - 1. duplicate_token: an earlier key with the query's token.
    induction: a key whose preceding token is the query's token (the token after an earlier
    occurrence), key <= query.
    """
    width = tokens.shape[1]
    position = torch.arange(width)
    real = position[None, :] < lengths[:, None]  # [batch, pos]
    real_pair = real[:, :, None] & real[:, None, :]  # [batch, q, k]
    lower = position[:, None] >= position[None, :]  # [q, k]
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, q, k]: token(q) == token(k)
    previous = position[:, None] - 1 == position[None, :]
    before_key = torch.zeros_like(same)
    before_key[:, :, 1:] = same[:, :, :-1]  # token(q) == token(k - 1)
    patterns = {
        "previous_token": previous.expand_as(same),
        "duplicate_token": same & (position[:, None] > position[None, :]),
        "induction": before_key,
    }
    return {name: p & lower & real_pair for name, p in patterns.items()}


def detector_scores(
    pattern: Float[Tensor, "batch layer head pos pos"], ideal: Bool[Tensor, "batch pos pos"]
) -> Float[Tensor, "layer head"]:
    """sum(A * P) / sum(A) over the query rows where the ideal pattern P has any key."""
    scored_rows = ideal.any(-1)  # [batch, q]
    mass = pattern * scored_rows[:, None, None, :, None]  # [batch, layer, head, q, k]
    on_ideal = (mass * ideal[:, None, None]).sum((0, 3, 4))
    return on_ideal / mass.sum((0, 3, 4))


def head_detectors(dataset: Dataset, capture: Capture) -> pd.DataFrame:
    """Previous-token, duplicate-token and induction scores of every head (docs/methods.md §3).

    Each score is the share of attention mass on the ideal pattern, counted over the query
    rows where that pattern has a key (so an ideal head scores 1.0); NaN when no row has one.
    Then `n` (prompts) and each score's 95% interval, `<detector>_ci_low`, `<detector>_ci_high`:
    the cluster bootstrap over prompts of the ratio of the sums (`ci_kind`; docs/methods.md §C).
    """
    pattern = capture.require("pattern_full", "head_detectors")  # [batch, layer, head, q, k], zero-padded
    width = pattern.shape[-1]
    ideals = ideal_patterns(dataset.tokens[:, :width], dataset.lengths)
    n_layers, n_heads = pattern.shape[1], pattern.shape[2]
    layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
    table = {"layer": layer.flatten().numpy(), "head": head.flatten().numpy()}
    for name in DETECTORS:
        table[name] = detector_scores(pattern, ideals[name]).flatten().double().numpy()
    table["n"] = pattern.shape[0]  # prompts
    for name in DETECTORS:
        on_ideal, mass = detector_parts(pattern, ideals[name])  # [batch, layer * head] each
        low, high = cluster_bootstrap_share(on_ideal.T.double().numpy(), mass.T.double().numpy())
        table |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    return pd.DataFrame(table | {"ci_kind": "cluster-bootstrap"})


def detector_parts(
    pattern: Float[Tensor, "batch layer head pos pos"], ideal: Bool[Tensor, "batch pos pos"]
) -> tuple[Float[Tensor, "batch cell"], Float[Tensor, "batch cell"]]:
    """Per prompt, `detector_scores`' two sums (mass on the ideal pattern, all mass over the rows
    it scores), each head a cell (layer-major): the score is their sums' ratio over prompts."""
    mass = pattern * ideal.any(-1)[:, None, None, :, None]  # [batch, layer, head, q, k]
    on_ideal = (mass * ideal[:, None, None]).sum((3, 4))  # [batch, layer, head]
    return on_ideal.flatten(1), mass.sum((3, 4)).flatten(1)


def pattern_frame(pattern: Float[Tensor, "pos pos"], tokens: list[str]) -> pd.DataFrame:
    """One head's pattern on one prompt as destination rows x source columns, 'i:token' labels."""
    labels = [f"{i}:{token}" for i, token in enumerate(tokens)]
    n = len(tokens)
    frame = pd.DataFrame(pattern[:n, :n].double().numpy(), index=labels, columns=labels)
    frame.index.name = "destination"
    frame.columns.name = "source"
    return frame


def pattern_records(
    patterns: Float[Tensor, "layer head pos pos"], heads: list[tuple[int, int]], tokens: list[str]
) -> pd.DataFrame:
    """The patterns of chosen heads in long form: layer, head, destination, source, tokens, attention."""
    n = len(tokens)
    query, key = torch.tril_indices(n, n)  # the causal half only
    frames = [
        pd.DataFrame(
            {
                "layer": layer,
                "head": head,
                "destination": query.numpy(),
                "destination_token": [tokens[int(q)] for q in query],
                "source": key.numpy(),
                "source_token": [tokens[int(k)] for k in key],
                "attention": patterns[layer, head, query, key].double().numpy(),
            }
        )
        for layer, head in heads
    ]
    return pd.concat(frames, ignore_index=True)
