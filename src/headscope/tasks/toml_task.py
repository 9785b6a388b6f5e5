"""User tasks from a TOML file: templates with {SLOT}s, slot fillers, the answer and what to score.

The schema (README "User tasks (TOML)" has a worked example):

    name = "capitals"                       # optional, default: the file's stem
    description = "..."                     # optional
    templates = ["The capital of {COUNTRY} is"]
    answer = { slot = "COUNTRY", relation = "capital" }   # or answer = "IO" (copy a slot)
    contrast = "S"                          # optional, same forms as answer
    keywords = ["COUNTRY"]                  # slots whose tokens the OV scores use (default:
                                            #   the answer's and the contrast's slots)
    relations = ["copy", "capital"]         # copy, next, prev, or a [mappings] name (default: copy
                                            #   and the relations of the answer and contrast)
    corrupt = ["COUNTRY"]                   # slots (or roles like S2) resampled in the twin
    [slots]
    COUNTRY = ["France", "Japan"]
    [mappings.capital]
    France = "Paris"
    [families]                              # ordered lists for next/prev
    days = { members = ["Monday", "Tuesday"], cyclic = true }   # or a plain list

Every problem is one TaskError naming the file, the bad value and the fix.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from headscope.tasks.dataset import TaskError
from headscope.tasks.prompt import Piece, Prompt, PromptPair, fill, occurrence_roles, slot_names
from headscope.tasks.task import Family, Task, WordFilter, any_word

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

TOP_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "templates",
    "slots",
    "answer",
    "contrast",
    "keywords",
    "relations",
    "corrupt",
    "families",
    "mappings",
)
BUILTIN_RELATIONS: tuple[str, ...] = ("copy", "next", "prev")
RESERVED_ROLES: tuple[str, ...] = ("end",)
SHOWN_BAD_WORDS = 5


@dataclass(frozen=True)
class Derived:
    """A word taken from a slot's filler through a relation: the answer or the contrast."""

    slot: str
    relation: str = "copy"


@dataclass(frozen=True)
class TaskFile:
    """The parsed, validated contents of a task file."""

    path: Path
    name: str
    description: str
    templates: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]
    answer: Derived
    contrast: Derived | None
    keywords: tuple[str, ...]
    relations: tuple[str, ...]
    corrupt: tuple[str, ...]
    families: tuple[Family, ...]
    mappings: dict[str, dict[str, str]]

    def fail(self, message: str) -> TaskError:
        return TaskError(f"task file {self.path}: {message}")

    def relate(self, relation: str, word: str) -> str | None:
        """f(word) for a relation of this file, or None where it has no value."""
        if relation == "copy":
            return word
        if relation in ("next", "prev"):
            family = next((f for f in self.families if word in f.members), None)
            if family is None:
                return None
            return family.successor(word) if relation == "next" else family.predecessor(word)
        return self.mappings[relation].get(word)


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
    spec = parse_task_file(path, _read_toml(path))
    validate(spec)
    return _to_task(spec)


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist; give a built-in task name or a .toml file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise TaskError(f"task file {path} is not UTF-8 text ({error.reason}); save it as UTF-8") from error
    except tomllib.TOMLDecodeError as error:
        raise TaskError(f"task file {path} is not valid TOML: {error}; fix the syntax there") from error


# ---- parsing: types and shapes of the TOML values -------------------------------------------


def parse_task_file(path: Path, data: dict) -> TaskFile:
    """The TOML table as a TaskFile; wrong types and unknown keys are TaskErrors."""
    fail = lambda message: TaskError(f"task file {path}: {message}")  # noqa: E731
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; the keys are {', '.join(TOP_KEYS)}")
    for key in ("templates", "slots", "answer"):
        if key not in data:
            raise fail(f"no {key!r}; {_REQUIRED_HELP[key]}")
    answer = _derived(data["answer"], "answer", fail)
    contrast = _derived(data["contrast"], "contrast", fail) if "contrast" in data else None
    return TaskFile(
        path=path,
        name=_string(data.get("name", path.stem), "name", fail),
        description=_string(data.get("description", f"user task from {path.name}"), "description", fail),
        templates=tuple(_strings(data["templates"], "templates", fail)),
        slots=_slots(data["slots"], fail),
        answer=answer,
        contrast=contrast,
        keywords=_keywords(data, answer, contrast, fail),
        relations=tuple(
            _strings(data.get("relations", _default_relations(answer, contrast)), "relations", fail)
        ),
        corrupt=tuple(_strings(data["corrupt"], "corrupt", fail)) if "corrupt" in data else (),
        families=_families(data.get("families", {}), fail),
        mappings=_mappings(data.get("mappings", {}), fail),
    )


_REQUIRED_HELP = {
    "templates": 'add templates = ["... {SLOT} ..."]',
    "slots": 'add a [slots] table, e.g. SLOT = ["word", "word"]',
    "answer": 'name the answer slot: answer = "SLOT", or answer = { slot = "SLOT", relation = "MAPPING" }',
}

Fail = Callable[[str], TaskError]


def _keywords(data: dict, answer: Derived, contrast: Derived | None, fail: Fail) -> tuple[str, ...]:
    """The keyword slots: as given, or by default the answer's and the contrast's slots."""
    if "keywords" not in data:
        return tuple(dict.fromkeys(d.slot for d in (answer, contrast) if d is not None))
    if data["keywords"] == []:
        raise fail(
            "keywords is empty, so the OV scores have no tokens; name slots, or leave keywords out "
            "to score the answer's and the contrast's slots"
        )
    return tuple(_strings(data["keywords"], "keywords", fail))


def _default_relations(answer: Derived, contrast: Derived | None) -> list[str]:
    """copy, and the relations that give the answer and the contrast (a mapping, next, prev)."""
    return list(dict.fromkeys(["copy", *(d.relation for d in (answer, contrast) if d is not None)]))


def _string(value, what: str, fail: Fail) -> str:
    if not isinstance(value, str):
        raise fail(f"{what} must be a string, got {value!r}")
    return value


def _strings(value, what: str, fail: Fail) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise fail(f"{what} must be a list of non-empty strings, got {value!r}")
    if not value:
        raise fail(f"{what} is empty; give at least one")
    return [v.strip() if what != "templates" else v for v in value]


def _slots(value, fail: Fail) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict) or not value:
        raise fail('[slots] must be a table of SLOT = ["word", ...], with at least one slot')
    slots = {}
    for name, fillers in value.items():
        if isinstance(fillers, list) and not fillers:
            raise fail(f"slot {name} has no fillers; give it at least one word, or remove it")
        words = _strings(fillers, f"slot {name}", fail)
        if any(len(w.split()) != 1 for w in words):
            raise fail(f"slot {name}: fillers must be single words, got {[w for w in words if ' ' in w]}")
        slots[name] = tuple(dict.fromkeys(words))
    return slots


def _derived(value, what: str, fail: Fail) -> Derived:
    if isinstance(value, str):
        return Derived(value)
    if isinstance(value, dict) and set(value) <= {"slot", "relation"} and "slot" in value:
        return Derived(_string(value["slot"], f"{what}.slot", fail), value.get("relation", "copy"))
    raise fail(f'{what} must be "SLOT" or {{ slot = "SLOT", relation = "NAME" }}, got {value!r}')


def _families(value, fail: Fail) -> tuple[Family, ...]:
    if not isinstance(value, dict):
        raise fail(
            "[families] must be a table of NAME = [members] or NAME = { members = [...], cyclic = true }"
        )
    families = []
    for name, family in value.items():
        members, cyclic = (
            (family.get("members"), family.get("cyclic", False))
            if isinstance(family, dict)
            else (family, False)
        )
        if not isinstance(cyclic, bool):
            raise fail(f"family {name}: cyclic must be true or false, got {cyclic!r}")
        families.append(Family(name, tuple(_strings(members, f"family {name}", fail)), cyclic))
    return tuple(families)


def _mappings(value, fail: Fail) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict):
        raise fail('[mappings.NAME] must be tables of word = "word"')
    mappings = {}
    for name, table in value.items():
        if not isinstance(table, dict) or not table or not all(isinstance(v, str) for v in table.values()):
            raise fail(f'mapping {name} must be a non-empty table of word = "word", got {table!r}')
        mappings[name] = {str(k).strip(): v.strip() for k, v in table.items()}
    return mappings


# ---- validation: the parts fit together -------------------------------------------------------


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
        slot = _slot_of(spec, target)
        if slot is None:
            raise spec.fail(f"corrupt: {target!r} is neither a slot nor a role like S2; name a slot")
        if len(spec.slots[slot]) < 2:
            raise spec.fail(f"corrupt: slot {slot} has one filler, so the twin cannot change it; add fillers")


def corrupt_targets(spec: TaskFile) -> tuple[str, ...]:
    """What the corrupted twin resamples: the `corrupt` list, by default the answer's slot."""
    return spec.corrupt or (spec.answer.slot,)


def _slot_of(spec: TaskFile, target: str) -> str | None:
    """The slot a corrupt target names: a slot itself, or the slot of a role such as S2."""
    if target in spec.slots:
        return target
    for template in spec.templates:
        for name, role in zip(slot_names(template), occurrence_roles(template), strict=True):
            if role == target:
                return name
    return None


def answer_range(spec: TaskFile) -> tuple[str, ...]:
    """Every word the answer can be."""
    words = (spec.relate(spec.answer.relation, w) for w in spec.slots[spec.answer.slot])
    return tuple(dict.fromkeys(w for w in words if w is not None))


def _quoted(words: list[str]) -> str:
    return _listed([repr(w) for w in words])


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_BAD_WORDS])
    more = len(items) - SHOWN_BAD_WORDS
    return shown + (f" and {more} more" if more > 0 else "")


# ---- the Task: roles, generator --------------------------------------------------------------


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
    )


def _generator(spec: TaskFile):
    def generate(n: int, rng: random.Random, word_ok: WordFilter) -> list[PromptPair]:
        if word_ok is not any_word:
            check_single_tokens(spec, word_ok)
        return [_pair(spec, rng) for _ in range(n)]

    return generate


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
        slot = _slot_of(spec, target)
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
