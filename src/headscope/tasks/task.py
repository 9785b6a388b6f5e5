"""The Task: a named generator of prompt pairs plus what to score on them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from headscope.errors import HeadscopeError
from headscope.tasks.prompt import PromptPair

WordFilter = Callable[[str], bool]
Generator = Callable[[int, random.Random, WordFilter], list[PromptPair]]


class TaskError(HeadscopeError):
    """A task or dataset that cannot be built as asked; the message says what to change."""


def any_word(word: str) -> bool:
    """The word filter used when no tokenizer is at hand: every word is allowed."""
    return True


@dataclass(frozen=True)
class Family:
    """An ordered list of members; `next`/`prev` of a member is its neighbour here."""

    name: str
    members: tuple[str, ...]
    cyclic: bool = False

    def successor(self, word: str) -> str | None:
        return self._neighbour(word, +1)

    def predecessor(self, word: str) -> str | None:
        return self._neighbour(word, -1)

    def _neighbour(self, word: str, step: int) -> str | None:
        if word not in self.members:
            return None
        index = self.members.index(word) + step
        if self.cyclic:
            return self.members[index % len(self.members)]
        return self.members[index] if 0 <= index < len(self.members) else None


def relate(
    relation: str, word: str, families: tuple[Family, ...], mappings: dict[str, dict[str, str]]
) -> str | None:
    """f(word): the word itself (copy), its neighbour in its family (next, prev) or the mapping's
    value (a mapping's name); None where the relation has no value for it (next of 'Z')."""
    if relation == "copy":
        return word
    if relation in ("next", "prev"):
        family = next((f for f in families if word in f.members), None)
        if family is None:
            return None
        return family.successor(word) if relation == "next" else family.predecessor(word)
    return mappings[relation].get(word)


@dataclass(frozen=True)
class Twin:
    """A kind of corrupted twin a task makes: what it changes and which edges it can show.

    An edge's effect (patching, attribution) is non-zero only where its source's output differs
    between the clean run and the twin's, so the twin decides which mechanism an edge analysis
    can see at all (docs/methods.md, circuits)."""

    kind: str
    changes: str  # what differs from the clean prompt (same template, same positions)
    reveals: str  # which edges can carry the difference


@dataclass(frozen=True)
class Task:
    """A task: prompts from templates with named roles, answers, contrasts and keywords.

    `answer_role` / `contrast_role` name the roles holding the answer and contrast words
    when they occur in the prompt (None when they do not, e.g. the next member of a
    sequence). `keyword_roles` name the filler roles whose tokens the OV scores use; `role_groups`
    merge roles that a name occupies several times (IOI's S = S1 + S2); `offsets` add
    derived roles such as IOI's `S1+1`. `twins` lists the kinds of corrupted twin the generator
    makes (the first is the default; with more than one, the generator takes `twin=KIND`), `twin`
    the kind chosen (None: the default); `task.with_twin(kind)` chooses another.
    `keep_patterns` says whole attention patterns are worth capturing on this task (short prompts
    with repeated tokens, as induction's): the head detectors read them, so the report and the
    labels run the detectors only where it is set.
    """

    name: str
    description: str
    generator: Generator
    keyword_roles: tuple[str, ...]
    answer_role: str | None
    contrast_role: str | None
    families: tuple[Family, ...] = ()
    relations: tuple[str, ...] = ("copy",)
    role_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    offsets: dict[str, tuple[str, int]] = field(default_factory=dict)
    mappings: dict[str, dict[str, str]] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    twins: tuple[Twin, ...] = ()
    twin: str | None = None
    keep_patterns: bool = False

    @property
    def twin_kind(self) -> str | None:
        """The kind of corrupted twin this task makes (None where it names none)."""
        return self.twin or (self.twins[0].kind if self.twins else None)

    def with_twin(self, kind: str) -> Task:
        """The same task with the corrupted twin `kind` (one of `twins`)."""
        kinds = [t.kind for t in self.twins]
        if kind not in kinds:
            choices = ", ".join(kinds) or "-"
            raise HeadscopeError(f"task {self.name} has no twin {kind!r}: choose one of {choices}")
        return replace(self, twin=kind)

    def generate(self, n: int, seed: int, word_ok: WordFilter = any_word) -> list[PromptPair]:
        """`n` prompt pairs, the same for the same seed (the clean prompts whatever the twin)."""
        chosen = {"twin": self.twin_kind} if len(self.twins) > 1 else {}
        return self.generator(n, random.Random(seed), word_ok, **chosen)
