"""QK attribution of one head between two roles: its options, checked, and its table
(`headscope.scores.qk_attribution`; docs/methods.md, "QK attribution"); and the report's share:
each labelled head's score from `end` to the key role its label's attention rule reads
(`labelled_qk`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from headscope.analyses.record import choice, count
from headscope.errors import HeadscopeError
from headscope.heads import parse_head
from headscope.models.loading import Model
from headscope.scores import labels as _labels
from headscope.scores import qk_attribution as _qk
from headscope.scores.attention import ideal_patterns
from headscope.tasks.dataset import Dataset

DEFAULT_BATCH = 16


def _role(value, argument: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HeadscopeError(f"{argument}={value!r}: give a role name of the task, e.g. end or t8")
    return value.strip()


def qk_options(
    model: Model,
    head: str,
    key: str,
    query: str = "end",
    baseline: str = "mean",
    batch_size: int = DEFAULT_BATCH,
) -> _qk.QKOptions:
    """The options, checked: the head exists in the model, the roles are names, the baseline known."""
    if not isinstance(head, str):
        raise HeadscopeError(f"head={head!r}: write the head as LAYER.HEAD, e.g. '2.0'")
    layer, index = parse_head(head, model.n_layers, model.n_heads)
    choice(baseline, "baseline", _qk.BASELINES)
    return _qk.QKOptions(
        layer, index, _role(key, "key"), _role(query, "query"), baseline, count(batch_size, "batch_size")
    )


def qk_attribution(model: Model, dataset: Dataset, options: _qk.QKOptions) -> pd.DataFrame:
    """One row per side (query, key) and upstream component: `side, component, first_order, exact,
    n, ci_low, ci_high` (`qk_attribution.qk_attribution`)."""
    return _qk.qk_attribution(model, dataset, options)


# ---- the report's share: each labelled head's score from `end` to the key its label reads -------

# The attention a label's rule reads (the rule's column in scores/labels.py's RULES), as the key
# role it goes to from `end`: the task's answer role, the contrast group's member the head attends
# to most, or the role the detector's ideal pattern marks at `end` (scores.attention.ideal_patterns).
KEY_OF_COLUMN: dict[str, str] = {
    "answer_attention": "answer",
    "contrast_attention": "contrast",
    "previous_token": "previous_token",
    "duplicate_token": "duplicate_token",
    "induction": "induction",
}
QUERY = "end"
TABLE_COLUMNS = ["layer", "head", "label", "query_role", "key_role", *_qk.COLUMNS, "score", "spearman"]


def label_columns() -> dict[str, str]:
    """label -> the column of its first required attention rule that has a key (KEY_OF_COLUMN),
    read from the rule rows: name mover -> answer_attention, induction -> induction, ..."""
    found: dict[str, str] = {}
    for rule in _labels.RULES:
        if rule.kind == "attention" and rule.required and rule.column in KEY_OF_COLUMN:
            found.setdefault(rule.label, rule.column)
    return found


def may_have_keys(dataset: Dataset) -> bool:
    """Whether a label with a key can name a head on this task (the plan: before any label)."""
    kinds = {KEY_OF_COLUMN[column] for column in label_columns().values()}
    return any(_has_kind(dataset, kind) for kind in kinds)


def _has_kind(dataset: Dataset, kind: str) -> bool:
    task = dataset.task
    if kind == "answer":
        return task.answer_role is not None
    if kind == "contrast":
        return task.answer_role is not None and _labels.contrast_group(task) is not None
    return task.keep_patterns and detector_key(dataset, kind) is not None


def detector_key(dataset: Dataset, detector: str) -> str | None:
    """The first role every prompt has where the detector's ideal pattern marks the key of `end`
    (induction: the token after the end token's earlier occurrence; None: no such role)."""
    ideal = ideal_patterns(dataset.tokens, dataset.lengths)[detector]  # [batch, query, key]
    rows = torch.arange(dataset.n)
    at_end = ideal[rows, dataset.end]  # [batch, key]
    for name, where in dataset.roles.items():
        if name != QUERY and bool(where.present.all()) and bool(at_end[rows, where.index].all()):
            return name
    return None


def key_role(dataset: Dataset, column: str, head: tuple[int, int], attention: pd.DataFrame) -> str | None:
    """The key role of a labelled head's score (None where the task has none)."""
    kind, task = KEY_OF_COLUMN[column], dataset.task
    if kind == "answer":
        return task.answer_role
    if kind == "contrast":
        group = _labels.contrast_group(task)
        return None if group is None else _most_attended(dataset.role_names(group), head, attention)
    return detector_key(dataset, kind)


def _most_attended(members: tuple[str, ...], head: tuple[int, int], attention: pd.DataFrame) -> str:
    """The member the head attends to most from `end` (the first where role attention is missing)."""
    if attention.empty:
        return members[0]
    mine = attention[(attention["layer"] == head[0]) & (attention["head"] == head[1])]
    mine = mine[(mine["query_role"] == QUERY) & mine["key_role"].isin(members)]
    if mine.empty:
        return members[0]
    return str(mine.sort_values("attention", ascending=False, kind="stable")["key_role"].iloc[0])


@dataclass(frozen=True)
class Keyed:
    """A labelled head and the key role its label reads (its labels joined where several do)."""

    layer: int
    head: int
    label: str
    key: str


def keyed_heads(dataset: Dataset, tables: dict[str, pd.DataFrame], most: int) -> list[Keyed]:
    """The labelled heads whose label reads attention to a key role, at most `most`: by the
    labels' order in RULES, then the attention the label reads, largest first."""
    labels, columns = tables.get("labels", pd.DataFrame()), label_columns()
    if labels.empty:
        return []
    attention = tables.get("role_attention", pd.DataFrame())
    task = dataset.task
    scores = _labels.head_scores(
        pd.DataFrame(), attention, tables.get("detectors", pd.DataFrame()), task.answer_role,
        _labels.contrast_group(task),
    )  # fmt: skip
    found: dict[tuple[int, int, str], list[str]] = {}
    for label, column in columns.items():
        mine = labels[labels["label"] == label][["layer", "head"]].astype(int).merge(scores, how="left")
        mine = mine.sort_values(column, ascending=False, kind="stable") if column in mine else mine
        for row in mine.itertuples(index=False):
            key = key_role(dataset, column, (row.layer, row.head), attention)
            if key is not None:
                found.setdefault((row.layer, row.head, key), []).append(label)
    chosen = list(found.items())[:most]
    return [Keyed(layer, head, ", ".join(named), key) for (layer, head, key), named in chosen]


def labelled_qk(
    model: Model,
    dataset: Dataset,
    tables: dict[str, pd.DataFrame],
    most: int,
    batch_size: int = DEFAULT_BATCH,
) -> tuple[pd.DataFrame, list[str]]:
    """QK attribution (`qk_attribution`, mean baseline) of each of `keyed_heads`, from `end` to its
    key role, one block of rows per head (TABLE_COLUMNS); and why a head has none (one line each:
    an architecture the core refuses, a key the mask hides)."""
    parts, why = [], []
    for keyed in keyed_heads(dataset, tables, most):
        options = _qk.QKOptions(keyed.layer, keyed.head, keyed.key, QUERY, "mean", batch_size)
        try:
            found = _qk.qk_attribution(model, dataset, options)
        except HeadscopeError as error:
            why.append(str(error))
            continue
        ids = {"layer": keyed.layer, "head": keyed.head, "label": keyed.label}
        found = found.assign(**ids, query_role=QUERY, key_role=keyed.key)
        parts.append(found.assign(score=found.attrs["score"], spearman=found.attrs["spearman"]))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TABLE_COLUMNS)
    return table[TABLE_COLUMNS], list(dict.fromkeys(why))
