"""Tokenised prompt datasets: tokens, named positions, answers, contrasts, keywords."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from headscope.tasks.prompt import Piece, Prompt, PromptPair
from headscope.tasks.task import Task, TaskError
from headscope.tasks.tokenization import WORD_CONTEXT, Tokenization, piece_position

__all__ = [  # TaskError, Tokenization and WORD_CONTEXT live next door and are imported from here too
    "WORD_CONTEXT",
    "Dataset",
    "FillerCheck",
    "Keywords",
    "RolePositions",
    "TaskError",
    "Tokenization",
    "answer_next",
    "build_dataset",
    "dataset_from_pairs",
    "missing_corrupted",
    "prompt_positions",
    "require_corrupted",
]


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
    dropped: int = 0  # prompts short of the n asked: they failed to tokenise even after topping up
    unusable_fillers: tuple[str, ...] = ()  # task words refused before generation: not one token

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def end(self) -> Int[Tensor, "batch"]:
        return self.lengths - 1

    def subset(self, chosen: int | Sequence[int]) -> Dataset:
        """These prompts alone, with their corrupted twins, as a Dataset: `chosen` is a count (the
        first that many; the dataset itself when it has no more) or the indices of the prompts, in
        the order given. Rows are cut to the subset's longest prompt, as tokenising them afresh does."""
        if isinstance(chosen, int) and not isinstance(chosen, bool):
            if chosen < 1:
                raise TaskError(f"a subset of {chosen} prompts: give at least 1")
            if chosen >= self.n:
                return self
            chosen = range(chosen)
        indices = list(chosen)
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.n:
                raise TaskError(f"prompt {index!r} is out of range: the dataset has prompts 0-{self.n - 1}")
        if not indices:
            raise TaskError("an empty subset: give at least one prompt index")
        twin = self.corrupted.subset(indices) if self.corrupted is not None else None
        return _rows(self, indices, twin)

    def role_names(self, role: str) -> tuple[str, ...]:
        """The roles a name stands for: itself, or the members of a group (S -> S1, S2)."""
        if role in self.task.role_groups:
            return self.task.role_groups[role]
        if role in self.roles:
            return (role,)
        known = ", ".join(sorted(set(self.roles) | set(self.task.role_groups)))
        raise TaskError(f"unknown role {role!r} for task {self.task.name}; roles: {known}")


def _rows(dataset: Dataset, indices: list[int], twin: Dataset | None) -> Dataset:
    """The prompts at `indices` of one side of a dataset (see `Dataset.subset`)."""
    rows = torch.tensor(indices, dtype=torch.long)
    width = int(dataset.lengths[rows].max())
    roles = {  # a role no chosen prompt has is left out, as tokenising the prompts afresh leaves it
        name: RolePositions(where.index[rows], where.present[rows])
        for name, where in dataset.roles.items()
        if bool(where.present[rows].any())
    }
    return Dataset(
        task=dataset.task,
        prompts=tuple(dataset.prompts[i] for i in indices),
        tokens=dataset.tokens[rows, :width],  # [subset, width]
        lengths=dataset.lengths[rows],
        roles=roles,
        answers=dataset.answers[rows],
        contrasts=dataset.contrasts[rows],
        keywords=_keyword_rows(dataset.keywords, indices),
        corrupted=twin,
    )


def _keyword_rows(keywords: Keywords, indices: list[int]) -> Keywords:
    """The keyword instances of the chosen prompts, renumbered to their rows in the subset."""
    of_prompt: dict[int, list[int]] = {}  # prompt -> its instances, in order
    for k, b in enumerate(keywords.batch.tolist()):
        of_prompt.setdefault(b, []).append(k)
    kept = [(row, k) for row, index in enumerate(indices) for k in of_prompt.get(index, [])]
    picked = torch.tensor([k for _, k in kept], dtype=torch.long)
    return Keywords(
        batch=torch.tensor([row for row, _ in kept], dtype=torch.long),
        position=keywords.position[picked],
        token=keywords.token[picked],
        words=tuple(keywords.words[k] for _, k in kept),
        roles=tuple(keywords.roles[k] for _, k in kept),
    )


def missing_corrupted(dataset: Dataset, analysis: str) -> str | None:
    """Why `analysis` cannot run on `dataset` for want of a corrupted twin, or None when it has one."""
    if dataset.corrupted is not None:
        return None
    return f"task {dataset.task.name} has no corrupted twin, which {analysis} needs"


def require_corrupted(dataset: Dataset, analysis: str, fix: str = "") -> Dataset:
    """The dataset's corrupted twin; without one, one line naming the analysis and the fix.

    Datasets from `build_dataset` and `dataset_from_pairs` always have a twin; the fix says what else
    to do (by default: build the dataset with `build_dataset`)."""
    why = missing_corrupted(dataset, analysis)
    if why is not None:
        raise TaskError(f"{why}; {fix or 'build the dataset with build_dataset, which makes the twin'}")
    return dataset.corrupted


TOP_UP_ROUNDS = 3  # generate n, 2n, 4n prompts at most while some fail to tokenise


def prompt_positions(prompt: Prompt, offsets: list[tuple[int, int]]) -> dict[str, int] | None:
    """The token index of every role of a prompt, or None when a filler is not one token."""
    positions: dict[str, int] = {}
    cursor = 0
    for piece in prompt.pieces:
        if piece.role is not None:
            word_start = cursor + len(piece.text) - len(piece.text.lstrip())
            position = piece_position(offsets, word_start, cursor + len(piece.text))
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


class FillerCheck:
    """The word filter a task's generator gets, remembering every filler it refused.

    Calling it asks whether a word is one token mid-prompt (`Tokenization.word_ok`); `at_start`
    asks the same of a prompt's first word, which has no space before it ("Mary" is not " Mary"
    in GPT-2). Generators filter their pools with it before drawing any prompt.
    """

    def __init__(self, tokens: Tokenization) -> None:
        self.tokens = tokens
        self.refused: dict[str, None] = {}  # insertion-ordered set of words refused mid-prompt

    def __call__(self, word: str) -> bool:
        usable = self.tokens.word_ok(word)
        if not usable:
            self.refused[word] = None
        return usable

    def at_start(self, word: str) -> bool:
        return self.tokens.opening_ok(word)


def answer_next(prompt: Prompt, tok: Tokenization) -> Prompt:
    """The prompt, ending with a space when the answer is spaced apart ("in", " ", "6").

    Then the model's next token at `end` is the answer's own token, as with " 6" in GPT-2.
    """
    answer = prompt.answer
    if prompt.text.endswith(" ") or not tok.word_ok(answer) or not tok.spaced_apart(answer):
        return prompt
    return replace(prompt, pieces=(*prompt.pieces, Piece(" ")))


@dataclass(frozen=True)
class _EncodedPair:
    pair: PromptPair
    clean: _Encoded
    corrupted: _Encoded


def _encode_pairs(pairs: list[PromptPair], tok: Tokenization) -> list[_EncodedPair]:
    """The pairs (in order) whose fillers are one token each and whose twins line up."""
    kept = []
    for pair in pairs:
        clean, corrupted = _encode(pair.clean, tok), _encode(pair.corrupted, tok)
        if _aligned(clean, corrupted):
            kept.append(_EncodedPair(pair, clean, corrupted))
    return kept


def _generated(task: Task, count: int, seed: int, check: FillerCheck, tok: Tokenization):
    pairs = task.generate(count, seed, check)
    return [PromptPair(answer_next(p.clean, tok), answer_next(p.corrupted, tok)) for p in pairs]


def _first_encoded(task: Task, n: int, seed: int, check: FillerCheck, tok: Tokenization):
    """The first `n` pairs that tokenise, generating more (the same seed's stream) while some fail."""
    count = n
    for _ in range(TOP_UP_ROUNDS):
        kept = _encode_pairs(_generated(task, count, seed, check, tok), tok)
        if len(kept) >= n or not kept:
            break
        count *= 2
    return kept[:n], count


def build_dataset(task: Task, tokenizer, n: int, seed: int) -> Dataset:
    """Generate `n` prompt pairs of `task` with `seed` and tokenise them for `tokenizer`.

    The task's fillers are first filtered against the tokenizer (those refused are listed in
    `unusable_fillers`); a pair that still fails (a filler merged with its neighbour, a twin
    that does not line up token for token) is replaced by further prompts of the same seed,
    up to 2**(TOP_UP_ROUNDS - 1) times `n` generated. `dropped` counts the prompts short of `n`.
    A prompt whose answer is spaced apart ends with that space (`answer_next`).

    Args:
        task: the `Task` (`hs.get_task(name)`).
        tokenizer: the model's (`model.tokens`), or a Hugging Face tokenizer.
        n: prompt pairs wanted.
        seed: seed of the generator.

    Returns:
        The `Dataset` with its corrupted twin; `len(dataset)` prompts.

    Example:
        >>> data = hs.build_dataset(hs.get_task("ioi"), model.tokens, n=50, seed=0)
        >>> len(data), data.prompts[0].text
    """
    if n < 1:
        raise TaskError(f"n={n}: give at least 1 prompt")
    tok = tokenizer if isinstance(tokenizer, Tokenization) else Tokenization(tokenizer)
    check = FillerCheck(tok)
    encoded, tried = _first_encoded(task, n, seed, check, tok)
    dataset = _dataset(task, encoded, tok, tried, n - len(encoded))
    return replace(dataset, unusable_fillers=tuple(check.refused))


def dataset_from_pairs(task: Task, pairs: list[PromptPair], tok: Tokenization) -> Dataset:
    """Tokenise given prompt pairs (kept in order) into a Dataset with its corrupted twin."""
    encoded = _encode_pairs(pairs, tok)
    return _dataset(task, encoded, tok, len(pairs), len(pairs) - len(encoded))


def _dataset(task: Task, encoded: list[_EncodedPair], tok: Tokenization, tried: int, dropped: int):
    if not encoded:
        raise TaskError(
            f"task {task.name}: none of its {tried} prompts tokenise with every filler "
            "as one token; check the fillers against the model's vocabulary"
        )
    clean_enc, corrupt_enc = [e.clean for e in encoded], [e.corrupted for e in encoded]
    _check_context(task, clean_enc + corrupt_enc, tok.n_ctx)
    twin = Dataset(**_assemble(task, [e.pair.corrupted for e in encoded], corrupt_enc, tok))
    clean = _assemble(task, [e.pair.clean for e in encoded], clean_enc, tok)
    return Dataset(**clean, corrupted=twin, dropped=dropped)
