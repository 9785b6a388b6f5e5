"""Tokenised prompt datasets: tokens, named positions, answers, contrasts, keywords."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from headscope.errors import HeadscopeError
from headscope.tasks.prompt import Piece, Prompt, PromptPair
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

    def role_names(self, role: str) -> tuple[str, ...]:
        """The roles a name stands for: itself, or the members of a group (S -> S1, S2)."""
        if role in self.task.role_groups:
            return self.task.role_groups[role]
        if role in self.roles:
            return (role,)
        known = ", ".join(sorted(set(self.roles) | set(self.task.role_groups)))
        raise TaskError(f"unknown role {role!r} for task {self.task.name}; roles: {known}")


TOP_UP_ROUNDS = 3  # generate n, 2n, 4n prompts at most while some fail to tokenise
WORD_CONTEXT = "x"  # the text a word follows in the mid-prompt checks ("x Mary", "x 1")


class Tokenization:
    """The model's tokenizer seen the way datasets need it: words, ids and offsets.

    BOS: every prompt starts with exactly one BOS, `bos_id`. The text is encoded without the
    tokenizer's special tokens and `bos_id` is put in front, so a tokenizer that adds its own BOS
    (Llama, Gemma) never gets a second one. A tokenizer without a BOS token (Qwen, SmolLM) gets
    its EOS in that place, as TransformerLens's `to_tokens(prepend_bos=True)` does (it sets
    `bos_token = eos_token`): a row equals `model.to_tokens(prompt.text)` for every convention,
    and position 0 is always a resting place for attention, never a word.

    Words: a filler mid-prompt follows a space. Its token is the one token covering the word's
    characters: " Mary" (GPT-2), "▁Mary" (SentencePiece) or, where the space before a word is a
    token of its own ("in 1" -> "in", " ", "1": Llama 3, Qwen, Llama 2's digits), the word's own
    token "1"; such a word is `spaced_apart`.
    """

    def __init__(self, tokenizer, n_ctx: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx  # the model's context length, when known: longer prompts are refused
        self.bos_id = _bos_id(tokenizer)
        self.pad_id = self.bos_id
        self.unk_id = tokenizer.unk_token_id
        self._mid_prompt: dict[str, tuple[int | None, bool]] = {}  # word -> (token, spaced apart)
        self._opening: dict[str, bool] = {}

    def single_token(self, text: str) -> int | None:
        """The id of `text` when it is exactly one known token, else None."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 and self._known(ids[0]) else None

    def word_ok(self, word: str) -> bool:
        """True when the word after a space mid-prompt is one token (a lone space token before it allowed)."""
        return self._word(word)[0] is not None

    def opening_ok(self, word: str) -> bool:
        """True when the word is one token as a prompt's first word, right after the BOS."""
        if word not in self._opening:
            ids, offsets = self._encode(word)
            position = _piece_position(offsets, 0, len(word))
            self._opening[word] = position is not None and self._known(ids[position])
        return self._opening[word]

    def word_token(self, word: str) -> int:
        """The token of `word` mid-prompt (its own token when a space token precedes it)."""
        token = self._word(word)[0]
        if token is None:
            raise TaskError(f"{word!r} is not a single token for this tokenizer")
        return token

    def spaced_apart(self, word: str) -> bool:
        """True when, mid-prompt, the space before `word` is a token of its own ("in", " ", "1")."""
        return self._word(word)[1]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids of `text` after one BOS (see the class docstring) and each token's char span."""
        ids, offsets = self._encode(text)
        return [self.bos_id, *ids], [(0, 0), *offsets]

    def target_tokens(self, word: str) -> tuple[int, ...]:
        """Tokens that spell `word`: its mid-prompt token and its bare spelling, each if one token."""
        found = (self._word(word)[0], self.single_token(word))
        return tuple(sorted({t for t in found if t is not None}))

    def decode(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]

    def _known(self, token: int) -> bool:
        return self.unk_id is None or token != self.unk_id

    def _word(self, word: str) -> tuple[int | None, bool]:
        """The word's mid-prompt token (None if not one token) and whether a space token precedes it."""
        if word not in self._mid_prompt:
            text = f"{WORD_CONTEXT} {word}"
            ids, offsets = self._encode(text)
            position = _piece_position(offsets, len(WORD_CONTEXT) + 1, len(text))
            if position is None or not self._known(ids[position]):
                self._mid_prompt[word] = (None, False)
            else:
                space = (len(WORD_CONTEXT), len(WORD_CONTEXT) + 1)
                self._mid_prompt[word] = (ids[position], position > 0 and offsets[position - 1] == space)
        return self._mid_prompt[word]


def _bos_id(tokenizer) -> int:
    """The BOS every prompt starts with: the tokenizer's BOS, else its EOS (TransformerLens's choice)."""
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
