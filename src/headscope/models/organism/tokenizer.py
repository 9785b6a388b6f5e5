"""A word-level tokenizer (Hugging Face `tokenizers` WordLevel) for the organism."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL = "<|endoftext|>"


def word_level_tokenizer(vocabulary: list[str]) -> PreTrainedTokenizerFast:
    """Token 0 is <|endoftext|> (BOS, EOS, pad and unknown); then one token per word."""
    vocab = {SPECIAL: 0} | {word: i + 1 for i, word in enumerate(w for w in vocabulary if w != SPECIAL)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        unk_token=SPECIAL,
        pad_token=SPECIAL,
    )
