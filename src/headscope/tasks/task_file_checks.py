"""Checking a parsed task file: its templates, slots, roles, relations, corruptions and words fit
together (and, for a model, every word is one token); each problem one TaskError naming the fix."""

from __future__ import annotations

from headscope.tasks.prompt import occurrence_roles, slot_names
from headscope.tasks.task import WordFilter
from headscope.tasks.task_file import Derived, TaskFile, answer_range, corrupt_targets, slot_of

BUILTIN_RELATIONS: tuple[str, ...] = ("copy", "next", "prev")


RESERVED_ROLES: tuple[str, ...] = ("end",)


SHOWN_BAD_WORDS = 5


def validate(spec: TaskFile) -> None:
    """TaskErrors for slots, roles, relations and corruptions that do not fit together."""
    _check_template_slots(spec)
    _check_roles(spec)
    for relation in spec.relations:
        _check_relation(spec, relation, "relations")
    for what, derived in (("answer", spec.answer), ("contrast", spec.contrast)):
        if derived is not None:
            _check_derived(spec, what, derived)
    for keyword in spec.keywords:
        if keyword not in spec.slots:
            raise spec.fail(
                f"keyword {keyword!r} is not a slot; keywords name slots: {', '.join(spec.slots)}"
            )
    _check_corrupt(spec)


def _check_template_slots(spec: TaskFile) -> None:
    used: set[str] = set()
    for number, template in enumerate(spec.templates, start=1):
        if "}{" in template:
            raise spec.fail(f"template {number} has two slots with nothing between them; separate them")
        names = slot_names(template)
        if not names:
            raise spec.fail(f"template {number} has no {{SLOT}}; every template needs at least one")
        missing = [n for n in names if n not in spec.slots]
        if missing:
            raise spec.fail(
                f"template {number} uses {{{missing[0]}}} but [slots] has no {missing[0]}; add it"
            )
        used.update(names)
    unused = [name for name in spec.slots if name not in used]
    if unused:
        raise spec.fail(f"slot {unused[0]} is not used by any template; use it in a template or remove it")


def _check_roles(spec: TaskFile) -> None:
    """Role names of repeated slots (S -> S1, S2) must not clash with slots or reserved roles."""
    for number, template in enumerate(spec.templates, start=1):
        for name, role in zip(slot_names(template), occurrence_roles(template), strict=True):
            if role in RESERVED_ROLES or (role != name and role in spec.slots):
                raise spec.fail(
                    f"template {number}: role {role!r} of slot {name} clashes with "
                    f"{'a reserved role' if role in RESERVED_ROLES else 'the slot ' + role}; rename a slot"
                )


def _check_relation(spec: TaskFile, relation: str, what: str) -> None:
    known = (*BUILTIN_RELATIONS, *spec.mappings)
    if relation not in known:
        raise spec.fail(f"{what}: unknown relation {relation!r}; choose from {', '.join(known)}")
    if relation in ("next", "prev") and not spec.families:
        raise spec.fail(f"{what}: relation {relation!r} needs a [families] table of ordered members")


def _check_derived(spec: TaskFile, what: str, derived: Derived) -> None:
    if derived.slot not in spec.slots:
        raise spec.fail(
            f"{what} slot {derived.slot!r} is not in [slots]; choose one of {', '.join(spec.slots)}"
        )
    _check_relation(spec, derived.relation, what)
    lacking = [n for n, t in enumerate(spec.templates, start=1) if derived.slot not in slot_names(t)]
    if lacking:
        raise spec.fail(
            f"template {lacking[0]} does not use the {what} slot {{{derived.slot}}}; add it there"
        )
    undefined = [w for w in spec.slots[derived.slot] if spec.relate(derived.relation, w) is None]
    if undefined:
        raise spec.fail(
            f"{what}: {derived.relation} has no value for {_quoted(undefined)} of slot {derived.slot}; "
            f"add {'them to the mapping' if derived.relation in spec.mappings else 'a family entry'} "
            "or remove those fillers"
        )
    if what == "contrast" and derived == spec.answer:
        raise spec.fail("the contrast is the answer itself; give another slot or relation for it")
    if what == "answer" and spec.contrast is None and len(answer_range(spec)) < 2:
        raise spec.fail("the answer takes only one value, so there is no contrast; add fillers or a contrast")


def _check_corrupt(spec: TaskFile) -> None:
    for target in corrupt_targets(spec):
        slot = slot_of(spec, target)
        if slot is None:
            raise spec.fail(f"corrupt: {target!r} is neither a slot nor a role like S2; name a slot")
        if len(spec.slots[slot]) < 2:
            raise spec.fail(f"corrupt: slot {slot} has one filler, so the twin cannot change it; add fillers")


def _quoted(words: list[str]) -> str:
    return _listed([repr(w) for w in words])


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_BAD_WORDS])
    more = len(items) - SHOWN_BAD_WORDS
    return shown + (f" and {more} more" if more > 0 else "")


def check_single_tokens(spec: TaskFile, word_ok: WordFilter) -> None:
    """A TaskError naming every filler, answer or contrast word that is not one token."""
    words = [(w, f"slot {s}") for s, fillers in spec.slots.items() for w in fillers]
    words += [(w, "the answer") for w in answer_range(spec)]
    if spec.contrast is not None:
        words += [
            (spec.relate(spec.contrast.relation, w), "the contrast") for w in spec.slots[spec.contrast.slot]
        ]
    places: dict[str, str] = {}
    for word, where in words:
        places.setdefault(word, where)  # each word named once, where first seen
    bad = [f"{w!r} ({where})" for w, where in places.items() if not word_ok(w)]
    if bad:
        shown = _listed(bad)
        raise spec.fail(
            f"not single tokens for this model: {shown}; use words that are one token "
            "after a space for this model's tokenizer, or remove them"
        )
