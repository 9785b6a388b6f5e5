"""A relation spelled by one model's tokenizer: the pairs kept, their tokens, the candidate targets.

A source is kept when it is one token mid-prompt (after a space, as a keyword in a prompt is). A
target is read by its first token as spelled mid-prompt (MAPS's rule for a target of several
tokens), and by its bare spelling too where that is one known token (as the OV scores' targets).
A pair whose source is not one token, or whose target has no known first token, is dropped and
counted. The candidate targets of a relation are its kept targets as distinct token sets (two
words spelled by the same first tokens are one candidate); the within-set score's chance level
is one over their number.
"""

from __future__ import annotations

from dataclasses import dataclass

from headscope.tasks.dataset import WORD_CONTEXT, Tokenization
from headscope.tasks.relation_library import Relation


@dataclass(frozen=True)
class SpelledRelation:
    """The kept pairs of a relation for one tokenizer, in the relation's order."""

    relation: Relation
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    source_tokens: tuple[int, ...]
    target_tokens: tuple[tuple[int, ...], ...]  # per kept pair: its target's first tokens (1 or 2)
    candidates: tuple[tuple[int, ...], ...]  # distinct target token sets, in first-seen order
    answer: tuple[int, ...]  # per kept pair: the index of its target among the candidates
    dropped: int

    @property
    def n(self) -> int:
        return len(self.sources)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.candidates) if self.candidates else float("nan")


def first_token_at(tokens: Tokenization, text: str, start: int) -> int | None:
    """The first known token of `text` that covers character `start` (a leading space allowed)."""
    ids, offsets = tokens.encode_with_offsets(text)
    for token, (a, b) in zip(ids, offsets, strict=True):
        if b > start and b > a and a >= start - 1:
            return token if tokens.unk_id is None or token != tokens.unk_id else None
    return None


def first_tokens(tokens: Tokenization, word: str) -> tuple[int, ...]:
    """The word's first token mid-prompt, and its bare spelling where that is one token (a bare
    fragment such as 'R' of 'Rome' would stand for many words), sorted, without repeats."""
    found = (
        first_token_at(tokens, f"{WORD_CONTEXT} {word}", len(WORD_CONTEXT) + 1),
        tokens.single_token(word),
    )
    return tuple(sorted({t for t in found if t is not None}))


def spell_relation(relation: Relation, tokens: Tokenization) -> SpelledRelation:
    """The pairs of `relation` this tokenizer can score, their tokens and the candidate targets."""
    kept = []
    for source, target in relation.pairs:
        spelled = first_tokens(tokens, target)
        if tokens.word_ok(source) and spelled:
            kept.append((source, target, tokens.word_token(source), spelled))
    candidates = tuple(dict.fromkeys(spelled for *_, spelled in kept))
    index = {c: i for i, c in enumerate(candidates)}
    return SpelledRelation(
        relation=relation,
        sources=tuple(k[0] for k in kept),
        targets=tuple(k[1] for k in kept),
        source_tokens=tuple(k[2] for k in kept),
        target_tokens=tuple(k[3] for k in kept),
        candidates=candidates,
        answer=tuple(index[k[3]] for k in kept),
        dropped=len(relation.pairs) - len(kept),
    )
