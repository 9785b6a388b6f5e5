"""Reading a user task file: the TOML schema, each value's type and shape, and the parsed TaskFile.

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
    keep_patterns = false                   # optional: capture whole attention patterns (short
                                            #   prompts with repeated tokens: the head detectors)
    [slots]
    COUNTRY = ["France", "Japan"]
    [mappings.capital]
    France = "Paris"
    [families]                              # ordered lists for next/prev
    days = { members = ["Monday", "Tuesday"], cyclic = true }   # or a plain list

Every problem is one TaskError naming the file, the bad value and the fix. The parts are checked
to fit together in tasks/task_file_checks.py; tasks/toml_task.py makes the Task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from headscope.tasks.prompt import occurrence_roles, slot_names
from headscope.tasks.task import Family, TaskError, relate

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
    "keep_patterns",
)


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
    keep_patterns: bool = False

    def fail(self, message: str) -> TaskError:
        return TaskError(f"task file {self.path}: {message}")

    def relate(self, relation: str, word: str) -> str | None:
        """f(word) for a relation of this file, or None where it has no value."""
        return relate(relation, word, self.families, self.mappings)


def read_toml(path: Path) -> dict:
    """The TOML file as a table; a missing file, non-UTF-8 text or bad syntax is one TaskError."""
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist; give a built-in task name or a .toml file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise TaskError(f"task file {path} is not UTF-8 text ({error.reason}); save it as UTF-8") from error
    except tomllib.TOMLDecodeError as error:
        raise TaskError(f"task file {path} is not valid TOML: {error}; fix the syntax there") from error


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
        families=parse_families(data.get("families", {}), fail),
        mappings=parse_mappings(data.get("mappings", {}), fail),
        keep_patterns=_flag(data.get("keep_patterns", False), "keep_patterns", fail),
    )


def _flag(value, key: str, fail) -> bool:
    if not isinstance(value, bool):
        raise fail(f"{key} must be true or false, got {value!r}")
    return value


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


def parse_families(value, fail: Fail) -> tuple[Family, ...]:
    """A [families] table: NAME = [members] or NAME = { members = [...], cyclic = true }."""
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


def parse_mappings(value, fail: Fail) -> dict[str, dict[str, str]]:
    """[mappings.NAME] tables of word = "word", keys and values stripped."""
    if not isinstance(value, dict):
        raise fail('[mappings.NAME] must be tables of word = "word"')
    mappings = {}
    for name, table in value.items():
        if not isinstance(table, dict) or not table or not all(isinstance(v, str) for v in table.values()):
            raise fail(f'mapping {name} must be a non-empty table of word = "word", got {table!r}')
        mappings[name] = {str(k).strip(): v.strip() for k, v in table.items()}
    return mappings


def corrupt_targets(spec: TaskFile) -> tuple[str, ...]:
    """What the corrupted twin resamples: the `corrupt` list, by default the answer's slot."""
    return spec.corrupt or (spec.answer.slot,)


def slot_of(spec: TaskFile, target: str) -> str | None:
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
