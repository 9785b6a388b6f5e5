"""The model's tokenizer seen the way datasets need it: one BOS, words as single tokens, offsets."""

from __future__ import annotations

from headscope.tasks.task import TaskError

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
            position = piece_position(offsets, 0, len(word))
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
            position = piece_position(offsets, len(WORD_CONTEXT) + 1, len(text))
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


def piece_position(offsets: list[tuple[int, int]], start: int, stop: int) -> int | None:
    """The one token covering chars [start, stop) of a filler (its leading space allowed)."""
    covering = [i for i, (a, b) in enumerate(offsets) if b > start and a < stop and b > a]
    if len(covering) != 1:
        return None
    a, b = offsets[covering[0]]
    return covering[0] if a >= start - 1 and b <= stop else None
