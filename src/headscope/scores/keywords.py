"""A dataset of bare keyword prompts (' a b c ...') for `headscope scores --keywords`."""

from __future__ import annotations

from headscope.errors import HeadscopeError
from headscope.tasks.dataset import Dataset, Tokenization, dataset_from_pairs
from headscope.tasks.prompt import Piece, Prompt, PromptPair
from headscope.tasks.task import Family, Task

KEYWORD_TASK = "keywords"


def _no_prompts(n, rng, word_ok):  # the keyword task is built from a given list, never generated
    raise HeadscopeError("the keyword task has no generator: build it with keyword_dataset(words, tokens)")


def keyword_task(words: list[str], chunk: int) -> Task:
    """A task whose one ordered family is `words`: next/prev is the neighbour in the list."""
    return Task(
        name=KEYWORD_TASK,
        description="bare keyword prompts given on the command line",
        generator=_no_prompts,
        keyword_roles=tuple(f"k{i}" for i in range(1, chunk + 1)),
        answer_role=None,
        contrast_role=None,
        families=(Family(KEYWORD_TASK, tuple(words)),),
        relations=("copy", "next", "prev"),
    )


def _check_words(words: list[str], tokens: Tokenization) -> None:
    if not words:
        raise HeadscopeError("words='': give at least one keyword, e.g. '1 2 3'")
    repeated = sorted({w for w in words if words.count(w) > 1})
    if repeated:
        raise HeadscopeError(
            f"words={' '.join(words)!r} repeats {', '.join(repeated)}: give each keyword once"
        )
    unknown = [w for w in words if not tokens.word_ok(w)]
    if unknown:
        raise HeadscopeError(
            f"keywords not in the model's vocabulary as one token: {', '.join(unknown)}; "
            "drop them or choose single-token words"
        )


def keyword_dataset(words: str | list[str], tokens: Tokenization, n_ctx: int = 1024) -> Dataset:
    """Bare prompts ' w1 w2 ...' (BOS first), split so each fits `n_ctx`, keywords in order.

    Each word keeps a leading space (GPT-2 spells mid-prompt words that way); where that space
    is a token of its own ("in", " ", "1": Llama 3, Qwen, Llama 2's digits) a keyword takes two
    tokens and its position is its own token. The BOS is the dataset's (see `Tokenization`).
    The corrupted twin is the prompt itself; answers and contrasts are placeholders (last and
    first word) that the OV scores do not read. `words` is a list, or one string of
    whitespace-separated words ("1 2 3" is three keywords, never its characters).

    Args:
        words: the keywords, in order (`next`/`prev` is the neighbour in this list).
        tokens: the model's tokenizer, `model.tokens`.
        n_ctx: the model's context length (longer lists are split over several prompts).

    Returns:
        A `Dataset` to pass as the task of `hs.ov_scores`.

    Example:
        >>> words = hs.keyword_dataset("1 2 3 4 5", model.tokens)
        >>> hs.ov_scores(model, words, relations="next")
    """
    words = words.split() if isinstance(words, str) else list(words)
    _check_words(words, tokens)
    tokens_per_word = 2 if any(tokens.spaced_apart(w) for w in words) else 1
    spare = tokens_per_word - 1  # a prompt's first space may take a token more (Llama 2's legacy "▁▁")
    chunk = max(1, (n_ctx - 1 - spare) // tokens_per_word)
    task = keyword_task(words, min(chunk, len(words)))
    pairs = []
    for start in range(0, len(words), chunk):
        part = words[start : start + chunk]
        pieces = tuple(Piece(" " + w, f"k{i + 1}") for i, w in enumerate(part))
        prompt = Prompt(pieces, answer=part[-1], contrast=part[0])
        pairs.append(PromptPair(prompt, prompt))
    dataset = dataset_from_pairs(task, pairs, tokens)
    if dataset.dropped:
        raise HeadscopeError(
            f"words={' '.join(words)!r}: some do not tokenise one token each in a prompt; check them"
        )
    return dataset
