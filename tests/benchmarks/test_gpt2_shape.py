"""The committed GPT-2 vocabulary gives GPT-2's own token ids."""

from __future__ import annotations

from benchmarks.gpt2_shape import gpt2_tokenizer


def test_gpt2_ids_as_published():
    tokenizer = gpt2_tokenizer()
    assert len(tokenizer) == 50257
    assert tokenizer.encode("Hello world") == [15496, 995]  # the ids every GPT-2 tutorial shows
    assert tokenizer.encode("<|endoftext|>") == [50256]
    assert tokenizer.decode(tokenizer.encode(" When Mary and John went")) == " When Mary and John went"
