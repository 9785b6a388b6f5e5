"""User tasks from a TOML file: the Task a task file describes, and its prompt generator.

The file's schema and parsing are in tasks/task_file.py, the checks that its parts fit together in
tasks/task_file_checks.py; the names below stay importable from here.
"""

from __future__ import annotations

import random
from pathlib import Path

from headscope.tasks.prompt import Piece, Prompt, PromptPair, fill, occurrence_roles, slot_names
from headscope.tasks.task import Task, WordFilter, any_word
from headscope.tasks.task_file import (
    TOP_KEYS,
    Derived,
    Fail,
    TaskFile,
    answer_range,
    corrupt_targets,
    parse_task_file,
    read_toml,
    slot_of,
    tomllib,
)
from headscope.tasks.task_file_checks import (
    BUILTIN_RELATIONS,
    RESERVED_ROLES,
    SHOWN_BAD_WORDS,
    check_single_tokens,
    validate,
)

__all__ = [
    "BUILTIN_RELATIONS",
    "RESERVED_ROLES",
    "SHOWN_BAD_WORDS",
    "TOP_KEYS",
    "Derived",
    "Fail",
    "TaskFile",
    "answer_range",
    "check_single_tokens",
    "corrupt_targets",
    "load_task_file",
    "parse_task_file",
    "tomllib",
    "validate",
]


def load_task_file(path: Path) -> Task:
    """A Task from a TOML task file, or a TaskError naming the problem and the fix.

    Args:
        path: the `.toml` file (templates, slots, answer, contrast, keywords, ...; see the README).

    Returns:
        The `Task`, usable wherever a task name is.

    Example:
        >>> task = hs.load_task_file("capitals.toml")
        >>> hs.evaluate(model, task, n=50)
    """
    path = Path(path)
    spec = parse_task_file(path, read_toml(path))
    validate(spec)
    return _to_task(spec)


def _roles_of(spec: TaskFile, slot: str) -> tuple[str, ...]:
    """Every role a slot takes across the templates (S, or S1 and S2), in order."""
    found = []
    for template in spec.templates:
        found += [
            r for n, r in zip(slot_names(template), occurrence_roles(template), strict=True) if n == slot
        ]
    return tuple(dict.fromkeys(found))


def _prompt_role(spec: TaskFile, derived: Derived | None) -> str | None:
    """The role holding the answer/contrast word in the prompt (a copied slot), else None."""
    if derived is None or derived.relation != "copy":
        return None
    return _roles_of(spec, derived.slot)[0]


def _to_task(spec: TaskFile) -> Task:
    return Task(
        name=spec.name,
        description=spec.description,
        generator=_generator(spec),
        keyword_roles=tuple(r for slot in spec.keywords for r in _roles_of(spec, slot)),
        answer_role=_prompt_role(spec, spec.answer),
        contrast_role=_prompt_role(spec, spec.contrast),
        families=spec.families,
        relations=spec.relations,
        role_groups={s: _roles_of(spec, s) for s in spec.slots if _roles_of(spec, s) != (s,)},
        mappings=spec.mappings,
        categories=dict(spec.slots),
        keep_patterns=spec.keep_patterns,
    )


def _generator(spec: TaskFile):
    def generate(n: int, rng: random.Random, word_ok: WordFilter) -> list[PromptPair]:
        if word_ok is not any_word:
            check_single_tokens(spec, word_ok)
        return [_pair(spec, rng) for _ in range(n)]

    return generate


def _draw(spec: TaskFile, slot: str, taken: set[str], rng: random.Random) -> str:
    """A filler of `slot` unlike every word already in the prompt."""
    free = [w for w in spec.slots[slot] if w not in taken]
    if not free:
        raise spec.fail(
            f"slot {slot} has no filler left that differs from the prompt's other words; add fillers"
        )
    word = rng.choice(free)
    taken.add(word)
    return word


def _pair(spec: TaskFile, rng: random.Random) -> PromptPair:
    template_id = rng.randrange(len(spec.templates))
    template = spec.templates[template_id]
    taken: set[str] = set()
    fillers = {slot: _draw(spec, slot, taken, rng) for slot in dict.fromkeys(slot_names(template))}
    clean = fill(template, fillers, occurrence_roles(template))
    answer = spec.relate(spec.answer.relation, fillers[spec.answer.slot])
    contrast = _contrast(spec, fillers, answer, rng)
    corrupted = _corrupt(spec, template, clean, fillers, taken, rng)
    return PromptPair(
        Prompt(clean, answer, contrast, template_id), Prompt(corrupted, answer, contrast, template_id)
    )


def _contrast(spec: TaskFile, fillers: dict[str, str], answer: str, rng: random.Random) -> str:
    """The contrast word: from the contrast slot, or another value the answer can take."""
    if spec.contrast is not None:
        return spec.relate(spec.contrast.relation, fillers[spec.contrast.slot])
    return rng.choice([w for w in answer_range(spec) if w != answer])


def _corrupt(spec, template, clean, fillers, taken, rng) -> tuple[Piece, ...]:
    """The clean pieces with the corrupt targets' fillers resampled (same template, same roles)."""
    new_by_role: dict[str, str] = {}
    for target in corrupt_targets(spec):
        slot = slot_of(spec, target)
        if slot not in fillers:
            continue
        word = _draw(spec, slot, taken, rng)
        roles = _roles_of(spec, slot) if target == slot else (target,)
        new_by_role.update(dict.fromkeys(roles, word))
    return tuple(
        Piece(p.text[: len(p.text) - len(p.text.lstrip())] + new_by_role[p.role], p.role)
        if p.role in new_by_role
        else p
        for p in clean
    )
