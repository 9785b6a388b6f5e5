"""The Task: a named generator of prompt pairs plus what to score on them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from headscope.tasks.prompt import PromptPair

WordFilter = Callable[[str], bool]
Generator = Callable[[int, random.Random, WordFilter], list[PromptPair]]


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


@dataclass(frozen=True)
class Task:
    """A task: prompts from templates with named roles, answers, contrasts and keywords.

    `answer_role` / `contrast_role` name the roles holding the answer and contrast words
    when they occur in the prompt (None when they do not, e.g. the next member of a
    sequence). `keyword_roles` name the filler roles whose tokens the OV scores use; `role_groups`
    merge roles that a name occupies several times (IOI's S = S1 + S2); `offsets` add
    derived roles such as IOI's `S1+1`.
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

    def generate(self, n: int, seed: int, word_ok: WordFilter = any_word) -> list[PromptPair]:
        """`n` prompt pairs, the same for the same seed."""
        return self.generator(n, random.Random(seed), word_ok)
