"""Within-set scores in a task's OV tables (docs/methods.md §2, §7): is a keyword's target the best
of its family's members?

For a keyword instance of word w in the task's family F (the first family holding w, as `relate`
reads it) and an ordered relation (copy, next, prev), the candidates are F's members, each spelled
as the OV scores spell a target (`Tokenization.target_tokens`; members spelled alike are one
candidate). The within-set rank is the atlas's (`atlas_within.within_ranks`, the same function,
on the same effective embedding rows the top-k score reads): the number of other candidates whose
logit is at least the target's; a hit is rank 0. On the successor relation this is Gould et al.'s
succession score: the successor ranked first among the sequence's own tokens. Chance is 1/|F|
(the mean over instances where families differ in size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from headscope.models.loading import Model
from headscope.scores.atlas_within import candidate_sets, within_ranks
from headscope.tasks.dataset import Dataset, Tokenization
from headscope.tasks.task import Family, relate

ORDERED = ("copy", "next", "prev")  # the relations a family orders: they have a within-set score
WITHIN_COLUMNS = ("within", "within_hits", "within_n", "within_chance")


@dataclass(frozen=True)
class _Group:
    """The instances of one relation in one family: their embedding rows and target candidates."""

    relation: str
    rows: list[int]
    candidates: list[tuple[int, ...]]
    answers: list[int]


def _spelled(family: Family, tokens: Tokenization) -> tuple[list[tuple[int, ...]], dict[str, int]]:
    """The family's distinct candidate spellings and each spelled member's candidate index."""
    spelled = {m: tokens.target_tokens(m) for m in family.members}
    candidates = list(dict.fromkeys(s for s in spelled.values() if s))
    index = {c: i for i, c in enumerate(candidates)}
    return candidates, {m: index[s] for m, s in spelled.items() if s}


def _groups(dataset: Dataset, tokens: Tokenization, relations, row: torch.Tensor) -> list[_Group]:
    task = dataset.task
    spelled = [_spelled(f, tokens) for f in task.families]
    groups = []
    for relation in [r for r in relations if r in ORDERED]:
        for family, (candidates, index) in zip(task.families, spelled, strict=True):
            rows, answers = [], []
            for i, word in enumerate(dataset.keywords.words):
                first = next((f for f in task.families if word in f.members), None)
                target = relate(relation, word, task.families, task.mappings) if first is family else None
                if target in index:
                    rows.append(int(row[i]))
                    answers.append(index[target])
            if rows and len(candidates) >= 2:
                groups.append(_Group(relation, rows, candidates, answers))
    return groups


def within_table(
    model: Model,
    dataset: Dataset,
    relations: tuple[str, ...],
    x: torch.Tensor,
    row: torch.Tensor,
    heads: list[tuple[int, int]],
    signs: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> pd.DataFrame:
    """[layer, head, relation, sign, within, within_hits, within_n, within_chance] of every head,
    sign and ordered relation with a family of at least 2 candidates (`x`: the effective embedding
    rows [row, d_model], `row`: each keyword instance's row)."""
    groups = _groups(dataset, model.tokens, relations, row)
    columns = ["layer", "head", "relation", "sign", *WITHIN_COLUMNS]
    if not groups:
        return pd.DataFrame(columns=columns)
    union, sets = candidate_sets(
        [g.rows for g in groups], [tuple(g.candidates) for g in groups], [tuple(g.answers) for g in groups]
    )
    ranks = within_ranks(model.weights, x, heads, union, sets, signs, dtype, device)  # [head, sign, pair]
    rows = []
    for relation in dict.fromkeys(g.relation for g in groups):
        mine = [i for i, g in enumerate(groups) if g.relation == relation]
        hits = sum((ranks[i] == 0).sum(-1).numpy() for i in mine)  # [head, sign]
        n = sum(len(groups[i].rows) for i in mine)
        chance = sum(len(groups[i].rows) / len(groups[i].candidates) for i in mine) / n
        for (layer, head), per_sign in zip(heads, hits, strict=True):
            for sign, hit in zip(signs, per_sign, strict=True):
                rows.append([layer, head, relation, sign, hit / n, int(hit), n, chance])
    return pd.DataFrame(rows, columns=columns).astype({"within_hits": np.int64, "within_n": np.int64})
