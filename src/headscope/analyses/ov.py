"""OV relation scores and the head labels read from them (with role attention and detectors)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from headscope.analyses.attention import attention_needs, attention_tables
from headscope.analyses.record import captured, integer, union
from headscope.capture import Capture, Needs
from headscope.errors import HeadscopeError
from headscope.heads import Head
from headscope.models.loading import Model
from headscope.scores import labels as _labels
from headscope.scores import ov as _ov
from headscope.scores.relations import default_relations
from headscope.tasks.dataset import Dataset
from headscope.tasks.task import Task

OV_NEEDS = Needs(resid0_keywords=True, logits_end=False)  # the "context" embedding reads block 0's output


def ov_scores(
    model: Model,
    dataset: Dataset,
    relations: Sequence[str] | None = None,
    k: int = 5,
    embedding: str = "context",
    negative: bool = False,
    heads: Sequence[Head] | None = None,
    taken: Capture | None = None,
    detail: bool = True,
) -> _ov.OVResult:
    """OV scores of `relations` (default: those the task defines that can have a target); k, the
    embedding, the relations and the heads are checked by `scores.ov.check_options`."""
    chosen = default_relations(dataset.task) if relations is None else tuple(relations)
    if not chosen:
        raise HeadscopeError(f"task {dataset.task.name} has no keywords to score: it defines no relation")
    options = _ov.OVOptions(chosen, integer(k, "k"), embedding, bool(negative), heads)
    return _ov.ov_scores(model, dataset, options, capture=taken, detail=detail)


def ov_tables(
    model: Model,
    dataset: Dataset,
    k: int,
    embedding: str,
    taken: Capture | None = None,
    computed: _ov.OVPass | None = None,
    detail_prompts: int | None = None,
) -> dict[str, pd.DataFrame]:
    """The task's own relations with both signs: `ov_scores` (every prompt), `ov_per_token` and
    `ov_categories` (the first `detail_prompts` prompts; None: every prompt); `computed`: their
    inputs and ranks from a pass shared with other score sets."""
    options = task_options(dataset.task, k, embedding)
    result = _ov.ov_scores(
        model, dataset, options, capture=taken, computed=computed, detail_prompts=detail_prompts
    )
    return {"ov_scores": result.table, "ov_per_token": result.per_token, "ov_categories": result.categories}


def task_options(task: Task, k: int, embedding: str) -> _ov.OVOptions:
    """The OV options of a task's tables: its own relations, both signs."""
    return _ov.OVOptions(tuple(task.relations), k, embedding, negative=True, within=True)


def thresholds_of(thresholds: _labels.LabelThresholds | dict | None) -> _labels.LabelThresholds:
    """A LabelThresholds from None (the defaults), itself, or a dict of the thresholds to change."""
    if thresholds is None:
        return _labels.LabelThresholds()
    if isinstance(thresholds, _labels.LabelThresholds):
        return thresholds
    if not isinstance(thresholds, dict):
        raise HeadscopeError(f"thresholds={thresholds!r}: give a LabelThresholds or a dict of thresholds")
    known = set(_labels.LabelThresholds.__dataclass_fields__)
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise HeadscopeError(f"thresholds: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return _labels.LabelThresholds(**thresholds)


def labels_of(
    task: Task, tables: dict[str, pd.DataFrame], thresholds: _labels.LabelThresholds
) -> pd.DataFrame:
    """The labels the score tables earn (`ov_scores` with its within-set scores, `role_attention`,
    `detectors`; a missing one gives no labels of its kind), named from weights and attention; a
    tested share must beat chance after BH over the OV table's tests. Behaviour comes later:
    `labels.with_support(labels, tables, thresholds)` once the knockout, DLA and edge tables exist,
    and `analyses.fdr.run_fdr(tables)` over every test of a run."""
    return _labels.label_heads(
        tables.get("ov_scores", pd.DataFrame()),
        tables.get("role_attention", pd.DataFrame()),
        tables.get("detectors", pd.DataFrame()),
        task.answer_role,
        thresholds,
        _labels.contrast_group(task),
    )


def label_needs(dataset: Dataset) -> Needs:
    return union(OV_NEEDS, attention_needs(dataset))


def label_tables(
    model: Model,
    dataset: Dataset,
    thresholds: _labels.LabelThresholds,
    k: int = 5,
    embedding: str = "context",
    taken: Capture | None = None,
) -> dict[str, pd.DataFrame]:
    """The labels and the tables they read: the OV scores of the task's default relations with both
    signs and their within-set scores, role attention, and the detectors where the task keeps whole
    patterns."""
    taken = captured(model, dataset, label_needs(dataset), taken)
    relations = default_relations(dataset.task)
    tables = {"ov_scores": pd.DataFrame()}
    if relations:
        options = _ov.OVOptions(relations, integer(k, "k"), embedding, negative=True, within=True)
        tables["ov_scores"] = _ov.ov_scores(model, dataset, options, capture=taken, detail=False).table
    tables |= attention_tables(model, dataset, taken)
    tables.setdefault("detectors", pd.DataFrame())
    return {"labels": labels_of(dataset.task, tables, thresholds), **tables}
