"""Tokenised prompt datasets: tokens, named positions, answers, contrasts, keywords."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from headscope.errors import HeadscopeError
from headscope.tasks.prompt import Prompt, PromptPair
from headscope.tasks.task import Task


class TaskError(HeadscopeError):
    """A task or dataset that cannot be built as asked; the message says what to change."""


@dataclass(frozen=True)
class RolePositions:
    """Where one role sits in each prompt; `present` is False where a prompt lacks it."""

    index: Int[Tensor, "batch"]
    present: Bool[Tensor, "batch"]


@dataclass(frozen=True)
class Keywords:
    """Every keyword instance: which prompt, which position, which token and word."""

    batch: Int[Tensor, "instance"]
    position: Int[Tensor, "instance"]
    token: Int[Tensor, "instance"]
    words: tuple[str, ...]
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    """A batch of prompts of one task, tokenised, with its corrupted twin."""

    task: Task
    prompts: tuple[Prompt, ...]
    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, "batch"]
    roles: dict[str, RolePositions]
    answers: Int[Tensor, "batch"]
    contrasts: Int[Tensor, "batch"]
    keywords: Keywords
    corrupted: Dataset | None = None
    dropped: int = 0

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def end(self) -> Int[Tensor, "batch"]:
        return self.lengths - 1

    def role_names(self, role: str) -> tuple[str, ...]:
        """The roles a name stands for: itself, or the members of a group (S -> S1, S2)."""
        if role in self.task.role_groups:
            return self.task.role_groups[role]
        if role in self.roles:
            return (role,)
        known = ", ".join(sorted(set(self.roles) | set(self.task.role_groups)))
        raise TaskError(f"unknown role {role!r} for task {self.task.name}; roles: {known}")


class Tokenization:
    """The model's tokenizer seen the way datasets need it: words, ids and offsets."""

    def __init__(self, tokenizer, n_ctx: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx  # the model's context length, when known: longer prompts are refused
        self.bos_id = _bos_id(tokenizer)
        self.pad_id = self.bos_id
        self.unk_id = tokenizer.unk_token_id

    def single_token(self, text: str) -> int | None:
        """The id of `text` when it is exactly one known token, else None."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1 or (self.unk_id is not None and ids[0] == self.unk_id):
            return None
        return ids[0]

    def word_ok(self, word: str) -> bool:
        """True when the word, with the leading space it has mid-prompt, is one token."""
        return self.single_token(" " + word) is not None

    def word_token(self, word: str) -> int:
        token = self.single_token(" " + word)
        if token is None:
            raise TaskError(f"{word!r} is not a single token for this tokenizer")
        return token

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [self.bos_id, *encoded["input_ids"]], [(0, 0), *encoded["offset_mapping"]]

    def target_tokens(self, word: str) -> tuple[int, ...]:
        """Tokens that spell `word`: with and without a leading space, each if one token."""
        found = (self.single_token(" " + word), self.single_token(word))
        return tuple(sorted({t for t in found if t is not None}))

    def decode(self, token: int) -> str:
        return self.tokenizer.decode([token])


def _bos_id(tokenizer) -> int:
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return int(candidate)
    raise TaskError("the tokenizer has no BOS, EOS or pad token; give it one (e.g. <|endoftext|>)")


def _piece_position(offsets: list[tuple[int, int]], start: int, stop: int) -> int | None:
    """The one token covering chars [start, stop) of a filler (its leading space allowed)."""
    covering = [i for i, (a, b) in enumerate(offsets) if b > start and a < stop and b > a]
    if len(covering) != 1:
        return None
    a, b = offsets[covering[0]]
    return covering[0] if a >= start - 1 and b <= stop else None


def prompt_positions(prompt: Prompt, offsets: list[tuple[int, int]]) -> dict[str, int] | None:
    """The token index of every role of a prompt, or None when a filler is not one token."""
    positions: dict[str, int] = {}
    cursor = 0
    for piece in prompt.pieces:
        if piece.role is not None:
            word_start = cursor + len(piece.text) - len(piece.text.lstrip())
            position = _piece_position(offsets, word_start, cursor + len(piece.text))
            if position is None:
                return None
            positions[piece.role] = position
        cursor += len(piece.text)
    return positions


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    positions: dict[str, int]


def _encode(prompt: Prompt, tok: Tokenization) -> _Encoded | None:
    ids, offsets = tok.encode_with_offsets(prompt.text)
    positions = prompt_positions(prompt, offsets)
    return None if positions is None else _Encoded(ids, positions)


def _with_derived_roles(task: Task, encoded: _Encoded) -> dict[str, int]:
    positions = dict(encoded.positions)
    positions["end"] = len(encoded.ids) - 1
    for name, (base, shift) in task.offsets.items():
        positions[name] = positions[base] + shift
    return positions


def _pad(rows: list[list[int]], pad_id: int) -> Int[Tensor, "batch pos"]:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long)


def _role_table(positions: list[dict[str, int]]) -> dict[str, RolePositions]:
    names = sorted({name for p in positions for name in p})
    return {
        name: RolePositions(
            torch.tensor([p.get(name, 0) for p in positions], dtype=torch.long),
            torch.tensor([name in p for p in positions], dtype=torch.bool),
        )
        for name in names
    }


def _keywords(task: Task, prompts, positions, rows) -> Keywords:
    batch, position, token, kw_words, kw_roles = [], [], [], [], []
    for i, (prompt, where) in enumerate(zip(prompts, positions, strict=True)):
        fillers = prompt.fillers()
        for role in task.keyword_roles:
            if role in where:
                batch.append(i)
                position.append(where[role])
                token.append(rows[i][where[role]])
                kw_words.append(fillers[role])
                kw_roles.append(role)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return Keywords(as_long(batch), as_long(position), as_long(token), tuple(kw_words), tuple(kw_roles))


def _assemble(task: Task, prompts: list[Prompt], encoded: list[_Encoded], tok: Tokenization):
    positions = [_with_derived_roles(task, e) for e in encoded]
    rows = [e.ids for e in encoded]
    return dict(
        task=task,
        prompts=tuple(prompts),
        tokens=_pad(rows, tok.pad_id),
        lengths=torch.tensor([len(r) for r in rows], dtype=torch.long),
        roles=_role_table(positions),
        answers=torch.tensor([tok.word_token(p.answer) for p in prompts], dtype=torch.long),
        contrasts=torch.tensor([tok.word_token(p.contrast) for p in prompts], dtype=torch.long),
        keywords=_keywords(task, prompts, positions, rows),
    )


def _aligned(clean: _Encoded | None, corrupted: _Encoded | None) -> bool:
    return (
        clean is not None
        and corrupted is not None
        and len(clean.ids) == len(corrupted.ids)
        and clean.positions == corrupted.positions
    )


def _check_context(task: Task, encoded: list[_Encoded], n_ctx: int | None) -> None:
    longest = max(len(e.ids) for e in encoded)
    if n_ctx is not None and longest > n_ctx:
        raise TaskError(
            f"task {task.name}: a prompt is {longest} tokens long (BOS included) but the model's "
            f"context holds {n_ctx}; use shorter templates or a model with a longer context"
        )


def build_dataset(task: Task, tokenizer, n: int, seed: int) -> Dataset:
    """Generate `n` prompt pairs of `task` with `seed` and tokenise them for `tokenizer`.

    A pair whose fillers are not single tokens, or whose corrupted twin does not line up
    with the clean prompt token for token, is dropped and counted in `dropped`.
    """
    if n < 1:
        raise TaskError(f"--n must be at least 1, got {n}")
    tok = tokenizer if isinstance(tokenizer, Tokenization) else Tokenization(tokenizer)
    pairs = task.generate(n, seed, tok.word_ok)
    return dataset_from_pairs(task, pairs, tok)


def dataset_from_pairs(task: Task, pairs: list[PromptPair], tok: Tokenization) -> Dataset:
    """Tokenise given prompt pairs (kept in order) into a Dataset with its corrupted twin."""
    kept, clean_enc, corrupt_enc = [], [], []
    for pair in pairs:
        clean, corrupted = _encode(pair.clean, tok), _encode(pair.corrupted, tok)
        if _aligned(clean, corrupted):
            kept.append(pair)
            clean_enc.append(clean)
            corrupt_enc.append(corrupted)
    if not kept:
        raise TaskError(
            f"task {task.name}: none of its {len(pairs)} prompts tokenise with every filler "
            "as one token; check the fillers against the model's vocabulary"
        )
    _check_context(task, clean_enc + corrupt_enc, tok.n_ctx)
    dropped = len(pairs) - len(kept)
    twin = Dataset(**_assemble(task, [p.corrupted for p in kept], corrupt_enc, tok))
    return Dataset(
        **_assemble(task, [p.clean for p in kept], clean_enc, tok), corrupted=twin, dropped=dropped
    )
