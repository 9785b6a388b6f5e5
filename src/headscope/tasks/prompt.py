"""A prompt as text pieces, each piece either template text or a filler of a named role."""

from __future__ import annotations

import re
from dataclasses import dataclass

SLOT_PATTERN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Piece:
    """A run of prompt text; `role` names the slot it fills, or is None for template text."""

    text: str
    role: str | None = None


@dataclass(frozen=True)
class Prompt:
    """One prompt with the roles of its fillers, the answer word and the contrast word."""

    pieces: tuple[Piece, ...]
    answer: str
    contrast: str
    template_id: int = 0

    @property
    def text(self) -> str:
        return "".join(piece.text for piece in self.pieces)

    def fillers(self) -> dict[str, str]:
        return {p.role: p.text.strip() for p in self.pieces if p.role is not None}


@dataclass(frozen=True)
class PromptPair:
    """A clean prompt and its corrupted twin: same template and roles, other fillers."""

    clean: Prompt
    corrupted: Prompt


def slot_names(template: str) -> list[str]:
    """The slot names of a template in order of appearance, repeats included."""
    return SLOT_PATTERN.findall(template)


def fill(template: str, fillers: dict[str, str], role_of_occurrence: list[str]) -> tuple[Piece, ...]:
    """Fill a template's slots; the i-th slot occurrence gets role `role_of_occurrence[i]`.

    A space before a slot goes into the filler's piece, so a filler token keeps its
    leading space the way GPT-2's tokenizer spells it (" Mary").
    """
    pieces: list[Piece] = []
    cursor = 0
    for index, match in enumerate(SLOT_PATTERN.finditer(template)):
        start = match.start()
        lead = " " if start > cursor and template[start - 1] == " " else ""
        text_before = template[cursor : start - len(lead)]
        if text_before:
            pieces.append(Piece(text_before))
        pieces.append(Piece(lead + fillers[match.group(1)], role_of_occurrence[index]))
        cursor = match.end()
    if cursor < len(template):
        pieces.append(Piece(template[cursor:]))
    return tuple(pieces)


def occurrence_roles(template: str) -> list[str]:
    """Role names for each slot occurrence: a slot used twice becomes S1, S2 (IOI naming)."""
    names = slot_names(template)
    counts = {name: names.count(name) for name in names}
    seen: dict[str, int] = {}
    roles = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        roles.append(f"{name}{seen[name]}" if counts[name] > 1 else name)
    return roles
