"""The cast from the circuit (docs/methods.md §7): S-inhibition, backup movers and their feeders,
named by the rows of `labels.RULES` whose step is "circuit". Pure: tables in, tables out.

A role here is what a head writes (OV), where it reads (attention) and whom it feeds (the edge type
into labelled heads), so any task with labelled movers gets its cast by the same rules:

- **S-inhibition**: a head whose q-edge into a labelled mover (name mover, negative name mover,
  copy suppression) carries at least `inhibition_edge` of the task's largest |edge|, and whose output,
  patched with its twin's, moves the movers' attention from the answer to the contrast group by at
  least `attention_shift` (`cast_runs.attention_shift`);
- **backup name mover**: a head after a mover with a copy score of at least `copy` (the bound on the
  candidates) whose knockout costs at least `backup` of the clean metric more once a mover is knocked out
  (`cast_runs.pair_knockouts`);
- **feeders**: a duplicate-token or induction head with a k- or v-edge into an S-inhibition head of at
  least `feed_edge` of the largest; its label becomes "duplicate-token (feeds S-inhibition 1.0)".

The required rows name a role; every row of a kind holding adds the kind to `support`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from headscope.heads import Component
from headscope.scores import labels as _labels
from headscope.scores.labels import LabelThresholds, Rule

Head = tuple[int, int]
MOVERS = ("name mover", "negative name mover", "copy suppression")
FEEDERS = ("duplicate-token", "induction")


def heads_labelled(labels: pd.DataFrame, names: Sequence[str]) -> list[Head]:
    """The heads with any of these labels (a feeder's text counts as its base label), in order."""
    if labels.empty:
        return []
    base = labels["label"].str.split(" (", n=1, regex=False).str[0]
    chosen = labels[base.isin(names)]
    return sorted({(int(r.layer), int(r.head)) for r in chosen.itertuples(index=False)})


def name_of(head: Head) -> str:
    return Component(*head).name


def edge_values(edges: pd.DataFrame) -> pd.Series:
    """Each edge's value: exact where patched, else the approximation's score."""
    return edges["exact"].where(edges["exact"].notna(), edges["score"])


def edge_shares(
    edges: pd.DataFrame, targets: Sequence[str], inputs: Sequence[str], column: str
) -> pd.DataFrame:
    """[layer, head, column]: each head's largest |edge| into the `inputs` (q, k, v) of the named
    targets, over the table's largest |edge|."""
    if edges.empty or not targets:
        return pd.DataFrame(columns=["layer", "head", column])
    size = edge_values(edges).abs()
    mine = edges[edges["target"].isin(targets) & edges["input"].isin(inputs)]
    heads = [Component.named(str(name)) for name in mine["source"]]
    keep = [c is not None and c.head is not None for c in heads]
    found = pd.DataFrame(
        {
            "layer": [c.layer for c, k in zip(heads, keep, strict=True) if k],
            "head": [c.head for c, k in zip(heads, keep, strict=True) if k],
            column: (size[mine.index][keep] / max(float(size.max()), 1e-12)).to_numpy(),
        }
    )
    return found.groupby(["layer", "head"], as_index=False)[column].max()


def kv_targets(heads: Sequence[Head], group_size: int) -> list[str]:
    """The key/value targets the heads read: group `h // group_size` of each head's layer."""
    return sorted({f"{layer}.{head // group_size}" for layer, head in heads})


def composition_into(
    composition: pd.DataFrame, readers: Sequence[Head], kinds: Sequence[str], column: str
) -> pd.DataFrame:
    """[layer, head, column]: each writer's largest composition score of these kinds into the readers."""
    if composition.empty or not readers:
        return pd.DataFrame(columns=["layer", "head", column])
    mine = composition[composition["target"].isin([name_of(h) for h in readers])]
    mine = mine[mine["kind"].isin(kinds)]
    writers = [Component.named(str(s)) for s in mine["source"]]
    layers, heads = [w.layer for w in writers], [w.head for w in writers]
    found = pd.DataFrame({"layer": layers, "head": heads, column: mine["score"].to_numpy()})
    return found.groupby(["layer", "head"], as_index=False)[column].max()


def largest_per_head(table: pd.DataFrame, column: str, also: Sequence[str] = ()) -> pd.DataFrame:
    """[layer, head, column, *also]: each head's row where `column` is largest."""
    if table.empty:
        return pd.DataFrame(columns=["layer", "head", column, *also])
    order = table.sort_values(column, ascending=False, kind="stable")
    return order.drop_duplicates(["layer", "head"])[["layer", "head", column, *also]]


# ---- naming --------------------------------------------------------------------------------------


def _kind_holds(label: str, kind: str, row, t: LabelThresholds) -> bool:
    """Every row of this kind of the label holds (a comparison with a missing other side left out);
    False where the kind has no rows or a value is missing."""
    rules = _labels.rules_of(label, kind)
    held = [_labels.holds(r, row, t) for r in rules]
    compared = [h for r, h in zip(rules, held, strict=True) if r.threshold is not None]
    return bool(compared) and all(compared) and all(h is not False for h in held)


def passes(label: str, row, t: LabelThresholds, tested: bool = True) -> bool:
    """Every required row of a cast label holds (a tested share: adjusted p below 0.05)."""
    rules: list[Rule] = [r for r in _labels.rules_of(label) if r.required]
    held = [_labels.holds(r, row, t) for r in rules]
    if not all(h is not None and h for h, r in zip(held, rules, strict=True) if r.threshold is not None):
        return False
    if any(h is False for h in held):
        return False
    return not tested or all(_labels.significant(r, row) for r in rules)


def _texts(label: str, row, t: LabelThresholds, roles: dict[str, str]) -> dict[str, str]:
    texts = {kind: [_labels.rule_text(r, row, t, roles, False) for r in _labels.rules_of(label, kind)]
             for kind in _labels.KINDS}  # fmt: skip
    return {kind: "; ".join(filter(None, found)) for kind, found in texts.items()}


def role_row(label: str, row, t: LabelThresholds, roles: dict[str, str]) -> dict:
    """One label row of a cast role: each kind's values with their thresholds, `support` the kinds
    whose rows all hold, the tested share's statistics (the backup's copy score)."""
    texts = _texts(label, row, t, roles)
    kinds = [kind for kind in _labels.KINDS if _kind_holds(label, kind, row, t)]
    tested = [r for r in _labels.rules_of(label) if r.chance is not None and r.required]
    stats = {s: _labels.value_of(row, f"{tested[0].column}_{s}") if tested else None
             for s in _labels.STAT_COLUMNS}  # fmt: skip
    return {
        "layer": int(row["layer"]),
        "head": int(row["head"]),
        "label": label,
        "support": _labels.support_of(kinds),
        **texts,
        **{s: np.nan if v is None else v for s, v in stats.items()},
        "evidence": "; ".join(texts[kind] for kind in _labels.KINDS if texts[kind]),
    }


def cast_roles(
    scores: pd.DataFrame, label: str, t: LabelThresholds, roles: dict[str, str], tested: bool = True
) -> pd.DataFrame:
    """The label rows of one cast role: every head of `scores` (a wide table with the rule's columns)
    that passes it."""
    rows = [role_row(label, row, t, roles) for _, row in scores.iterrows() if passes(label, row, t, tested)]
    return pd.DataFrame(rows, columns=_labels.LABEL_COLUMNS)


def with_feeds(
    labels: pd.DataFrame, scores: pd.DataFrame, t: LabelThresholds, roles: dict[str, str]
) -> pd.DataFrame:
    """The labels with each duplicate-token or induction head that passes "feeds S-inhibition"
    renamed "<label> (feeds S-inhibition <heads>)", its feed evidence added by kind and its support
    widened by the kinds of the feed that hold."""
    label = "feeds S-inhibition"
    indexed = scores.set_index(["layer", "head"]) if not scores.empty else scores
    rows = []
    for row in labels.to_dict("records"):
        head = (row["layer"], row["head"])
        if row["label"] not in FEEDERS or scores.empty or head not in indexed.index:
            rows.append(row)
            continue
        feed = indexed.loc[head].to_dict() | {"layer": head[0], "head": head[1]}
        if not passes(label, feed, t):
            rows.append(row)
            continue
        texts = _texts(label, feed, t, roles)
        kinds = set(_labels.support_kinds(row["support"]))
        kinds |= {k for k in _labels.KINDS if _kind_holds(label, k, feed, t)}
        mine = row | ({"behaviour": ""} if row.get("behaviour") == "not measured" else {})
        joined = {k: "; ".join(filter(None, (mine.get(k), texts[k]))) for k in _labels.KINDS}
        rows.append(
            row
            | joined
            | {
                "label": f"{row['label']} (feeds S-inhibition {roles['S']})",
                "support": _labels.support_of([k for k in _labels.KINDS if k in kinds]),
                "evidence": "; ".join(joined[k] for k in _labels.KINDS if joined[k]),
            }
        )
    return pd.DataFrame(rows, columns=labels.columns)
