"""Relations f(t) of the OV scores: copy, next, prev, or a task's own mapping."""

from __future__ import annotations

import torch

from headscope.errors import HeadscopeError
from headscope.scores.ov_kernel import Targets
from headscope.tasks.dataset import Dataset, Tokenization
from headscope.tasks.task import Task, relate

BUILTIN_RELATIONS: tuple[str, ...] = ("copy", "next", "prev")


def default_relations(task: Task) -> tuple[str, ...]:
    """The relations a task defines that can have a target: what `scores` uses by default.

    Copy for every task with keywords; next/prev only where an ordered family has a neighbour
    for some member; a mapping only where it maps some word. A task without keywords has none.
    """
    if not task.keyword_roles:
        return ()
    declared = dict.fromkeys(("copy", *task.relations))
    return tuple(r for r in declared if _can_have_target(task, r))


def _can_have_target(task: Task, relation: str) -> bool:
    if relation == "copy":
        return True
    if relation in ("next", "prev"):
        step = (lambda f, w: f.successor(w)) if relation == "next" else (lambda f, w: f.predecessor(w))
        return any(step(f, w) is not None for f in task.families for w in f.members)
    return bool(task.mappings.get(relation))


def check_relations(task: Task, relations: tuple[str, ...]) -> None:
    """A HeadscopeError naming an unknown relation and the ones this task offers."""
    if not relations:
        raise HeadscopeError("no relation given: choose from copy, next, prev or a mapping of the task")
    known = (*BUILTIN_RELATIONS, *task.mappings)
    for relation in relations:
        if relation not in known:
            raise HeadscopeError(
                f"unknown relation {relation!r} for task {task.name}: choose from {', '.join(known)}"
            )


def related_word(task: Task, relation: str, word: str) -> str | None:
    """f(word), or None when the relation has no target for it (next of 'Z')."""
    return relate(relation, word, task.families, task.mappings)


def instance_targets(
    dataset: Dataset, tokens: Tokenization, relation: str
) -> tuple[list[str | None], list[tuple[int, ...]]]:
    """Per keyword instance: the target word and its tokens (with and without a leading space).

    An instance whose target word is missing, or is not a single token, has no tokens and
    is left out of the score's n.
    """
    found: dict[str, tuple[int, ...]] = {}
    words = [related_word(dataset.task, relation, w) for w in dataset.keywords.words]
    for word in set(words) - {None}:
        found[word] = tokens.target_tokens(word)
    return words, [found[w] if w is not None else () for w in words]


def row_targets(per_relation: list[list[tuple[int, ...]]], row: torch.Tensor, n_rows: int) -> Targets:
    """Targets of each embedding row (instances sharing a row share their targets)."""
    width = max([len(t) for targets in per_relation for t in targets] + [1])
    tokens = torch.zeros(n_rows, len(per_relation), width, dtype=torch.long)
    valid = torch.zeros(n_rows, len(per_relation), dtype=torch.bool)
    for r, targets in enumerate(per_relation):
        for instance, target in enumerate(targets):
            if target:
                padded = (*target, *[target[0]] * (width - len(target)))
                tokens[row[instance], r] = torch.tensor(padded)
                valid[row[instance], r] = True
    return Targets(tokens, valid)
