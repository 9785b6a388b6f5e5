"""The cast from the circuit, on one task (docs/methods.md §7): S-inhibition heads, backup movers
and the duplicate-token / induction heads that feed S-inhibition, from the labelled movers, the
edges, the composition scores and two bounded runs (`scores.cast_runs`).

Run after the labels, the knockouts and the edges (the report's circuit step). Passes: one per
S-inhibition candidate (heads whose q-edge into a mover passes `inhibition_edge`) and per batch for
the patch; 1 + movers + candidates + movers x candidates for the pair knockouts, the candidates
being the heads with a copy score of at least `copy` that are not movers.
"""

from __future__ import annotations

import pandas as pd

from headscope.models.loading import Model
from headscope.scores import cast, cast_runs
from headscope.scores import labels as _labels
from headscope.scores.ablation import AblationOptions
from headscope.scores.composition import composition_scores
from headscope.tasks.dataset import Dataset

Head = tuple[int, int]


def _named(heads: list[Head]) -> str:
    return ", ".join(cast.name_of(h) for h in heads)


def _merged(parts: list[pd.DataFrame]) -> pd.DataFrame:
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part.astype({"layer": int, "head": int}), how="left", on=["layer", "head"])
    return merged


def inhibition(
    model: Model, dataset: Dataset, tables: dict, movers: list[Head], t: _labels.LabelThresholds, comp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the S-inhibition candidates' wide scores, the patch's rows)."""
    task = dataset.task
    into = [cast.name_of(m) for m in movers]
    shares = cast.edge_shares(tables["edges"], into, ["q"], "inhibition_edge_share")
    shares = shares[(shares["inhibition_edge_share"] >= t.inhibition_edge)]
    candidates = [h for h in zip(shares["layer"], shares["head"], strict=True) if h not in movers]
    if not candidates:
        return pd.DataFrame(columns=["layer", "head"]), pd.DataFrame()
    shifts = cast_runs.attention_shift(
        model, dataset, candidates, movers, task.answer_role, _labels.contrast_group(task)
    )
    attention = head_attention(tables, task)
    wide = _merged(
        [
            shares[[h in candidates for h in zip(shares["layer"], shares["head"], strict=True)]],
            cast.largest_per_head(shifts, "attention_shift"),
            cast.composition_into(comp, movers, ["q"], "q_composition"),
            attention,
        ]
    )
    return wide, shifts


def head_attention(tables: dict, task) -> pd.DataFrame:
    """[layer, head, answer_attention, contrast_attention, copy and its tests]: `labels.head_scores`."""
    return _labels.head_scores(
        tables.get("ov_scores", pd.DataFrame()),
        tables.get("role_attention", pd.DataFrame()),
        pd.DataFrame(),
        task.answer_role,
        _labels.contrast_group(task),
    )


def backups(
    model: Model, dataset: Dataset, tables: dict, movers: list[Head], t: _labels.LabelThresholds
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the backup candidates' wide scores, the pair knockouts' rows). A candidate copies (copy at
    least `copy`) and sits after a mover: a backup changes what it does when the mover is out, so it
    reads the mover's output; a head of the mover's layer or an earlier one computes the same
    whatever the mover does (its effect can still grow through later heads: not a backup)."""
    scores = head_attention(tables, dataset.task)
    if "copy" not in scores.columns:
        return pd.DataFrame(columns=["layer", "head"]), pd.DataFrame()
    first = min(layer for layer, _ in movers)
    copying = scores[(scores["copy"] >= t.copy) & (scores["layer"] > first)]
    candidates = [h for h in zip(copying["layer"], copying["head"], strict=True) if h not in movers]
    if not candidates:
        return pd.DataFrame(columns=["layer", "head"]), pd.DataFrame()
    answer = dataset.task.answer_role
    pairs = cast_runs.pair_knockouts(model, dataset, movers, candidates, answer, AblationOptions())
    pairs = pairs[pairs["layer"] > pairs["mover_layer"]].reset_index(drop=True)  # it reads the mover
    best = cast.largest_per_head(pairs, "backup_growth", ["backup_attention"])
    return _merged([best, scores]), pairs


def cast_tables(
    model: Model, dataset: Dataset, tables: dict[str, pd.DataFrame], t: _labels.LabelThresholds
) -> dict[str, pd.DataFrame]:
    """`labels` with the cast added (S-inhibition, backup name mover rows; feeders renamed) and `cast`:
    the patch's and the pair knockouts' rows (`measure`: attention_shift or pair_knockout). Nothing
    where the task has no labelled mover, no contrast role or no edges."""
    labels = tables.get("labels", pd.DataFrame(columns=_labels.LABEL_COLUMNS))
    movers = cast.heads_labelled(labels, cast.MOVERS)
    task = dataset.task
    if not movers or task.contrast_role is None or tables.get("edges") is None or tables["edges"].empty:
        return {}
    comp = composition_scores(model)
    roles = {"A": str(task.answer_role), "C": str(_labels.contrast_group(task)), "M": _named(movers)}
    inhibiting, shifts = inhibition(model, dataset, tables, movers, t, comp)
    named = cast.cast_roles(inhibiting, "S-inhibition", t, roles)
    wide, pairs = backups(model, dataset, tables, movers, t)
    backed = cast.cast_roles(wide, "backup name mover", t, roles)
    s_heads = [(int(la), int(h)) for la, h in zip(named["layer"], named["head"], strict=True)]
    kv = cast.kv_targets(s_heads, model.arch.group_size)
    feeds = _merged(
        [
            cast.edge_shares(tables["edges"], kv, ["k", "v"], "feed_edge_share"),
            cast.composition_into(comp, s_heads, ["k", "v"], "feed_composition"),
        ]
    )
    fed = cast.with_feeds(labels, feeds, t, roles | {"S": _named(s_heads)})
    every = pd.concat([df for df in (fed, named, backed) if not df.empty], ignore_index=True)
    every = every.sort_values(["layer", "head", "label"], kind="stable").reset_index(drop=True)
    measured = [m.assign(measure=name) for m, name in ((shifts, "attention_shift"), (pairs, "pair_knockout"))]
    measured = [m for m in measured if not m.empty]
    return {"labels": every} | ({"cast": pd.concat(measured, ignore_index=True)} if measured else {})
