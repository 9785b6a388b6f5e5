"""The head atlas's relation library (methods.md section 11): word pairs (source, target) in groups.

The built-in relations are data, in `tasks/relations/*.toml`, each file one group, written in the
task-file format (`[mappings.NAME]` tables of source = "target", and `[families]` of ordered
members, each family F giving the relations F_next and F_prev). A user's TOML file in the same
format extends the library: a task file's own `[mappings]` and `[families]` are read from it (its
other task keys are ignored), and an optional `group = "..."` names its group (default: user).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from headscope.tasks.task import Family, TaskError
from headscope.tasks.task_file import TOP_KEYS, parse_families, parse_mappings, tomllib

GROUPS: tuple[str, ...] = ("algorithmic", "linguistic", "knowledge", "translation")
USER_GROUP = "user"
LIBRARY_KEYS: tuple[str, ...] = ("group", "source", "families", "mappings")


@dataclass(frozen=True)
class Relation:
    """A named list of (source, target) word pairs in a group, with where its facts come from."""

    name: str
    group: str
    pairs: tuple[tuple[str, str], ...]
    source: str = ""


def family_relations(family: Family, group: str, source: str) -> list[Relation]:
    """F_next and F_prev of an ordered family: each member with its neighbour, where it has one."""
    found = []
    for suffix, step in (("next", family.successor), ("prev", family.predecessor)):
        pairs = tuple((w, step(w)) for w in family.members if step(w) is not None)
        found.append(Relation(f"{family.name}_{suffix}", group, pairs, source))
    return found


def parse_relations(path: Path, data: dict, group: str) -> list[Relation]:
    """The relations of one TOML table: its families' next/prev, then its mappings."""
    fail = lambda message: TaskError(f"relation file {path}: {message}")  # noqa: E731
    unknown = sorted(set(data) - set(LIBRARY_KEYS) - set(TOP_KEYS))
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; a relation file has {', '.join(LIBRARY_KEYS)}")
    group = data.get("group", group)
    source = data.get("source", str(path))
    if not isinstance(group, str) or not group.strip() or not isinstance(source, str):
        raise fail(f"group and source must be strings, got {group!r} and {source!r}")
    found = [
        r for f in parse_families(data.get("families", {}), fail) for r in family_relations(f, group, source)
    ]
    for name, table in parse_mappings(data.get("mappings", {}), fail).items():
        found.append(Relation(name, group, tuple(table.items()), source))
    if not found:
        raise fail('no relation in it; add [mappings.NAME] tables of source = "target" or a [families] table')
    return found


def read_relation_file(path: Path, group: str = USER_GROUP) -> list[Relation]:
    """The relations of a user's TOML file (a TaskError naming the file and the fix otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"relation file {path} does not exist; give a relation name, a group or a .toml file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise TaskError(f"relation file {path} is not valid UTF-8 TOML ({error}); fix it there") from error
    return parse_relations(path, data, group)


@functools.cache
def library() -> dict[str, Relation]:
    """Every built-in relation by name, group by group in the order of GROUPS."""
    folder = resources.files("headscope.tasks").joinpath("relations")
    found: dict[str, Relation] = {}
    for group in GROUPS:
        text = folder.joinpath(f"{group}.toml").read_text(encoding="utf-8")
        for relation in parse_relations(Path(f"relations/{group}.toml"), tomllib.loads(text), group):
            found[relation.name] = relation
    return found


def choose_relations(names: tuple[str, ...] | None = None) -> list[Relation]:
    """The relations named: relation names, group names (every relation of it), or .toml files of
    user relations (all of the file's); None: the whole library. A user relation may not reuse a name."""
    known = library()
    if names is None:
        return list(known.values())
    chosen: dict[str, Relation] = {}
    for name in names:
        for relation in _named(name, known):
            if relation.name in chosen and chosen[relation.name] != relation:
                raise TaskError(f"two relations are named {relation.name!r}; rename the one in your file")
            chosen[relation.name] = relation
    if not chosen:
        raise TaskError("no relation chosen; give names, groups (e.g. knowledge) or a .toml file")
    return list(chosen.values())


def _named(name: str, known: dict[str, Relation]) -> list[Relation]:
    if name.endswith(".toml"):
        return read_relation_file(Path(name))
    if name in known:
        return [known[name]]
    if name in GROUPS:
        return [r for r in known.values() if r.group == name]
    shown = ", ".join(list(known)[:4])
    raise TaskError(
        f"unknown relation {name!r}: give a group ({', '.join(GROUPS)}), a relation (e.g. {shown}, ...: "
        "`headscope atlas --list` shows all) or a .toml file of mappings in the task-file format"
    )
