"""Tiny tokenizers of each convention the field uses, built with the `tokenizers` library.

Each builder takes a word list (e.g. `headscope.tasks.vocabulary.task_vocabulary()`) and returns a
`PreTrainedTokenizerFast` that `save_pretrained` writes into a model folder and `AutoTokenizer`
loads back. The BPE merges are trained on the words themselves (to completion), so every word is
one token in the form its convention uses mid-prompt, and, where the convention has one, in the
form it takes as a prompt's first word:

- `gpt2_bpe`: byte-level BPE, leading-space tokens (" Mary" is `ĠMary`), digits as whole numbers
  (" 12" is one token); BOS = EOS = unk = `<|endoftext|>`, which the tokenizer never adds itself.
- `sentencepiece_style` (Llama 2, Gemma): Metaspace `▁` (prepended to the first word too, so
  "Mary" and " Mary" are both `▁Mary`), numbers split into single digits after a `▁` token of
  their own ("in 12" -> `▁in ▁ 1 2`), an `<unk>` for unknown characters, and a BOS `<s>` that the
  tokenizer ADDS ITSELF.
- `llama3_style`: byte-level BPE whose pre-tokenizer isolates every digit, so the space before a
  number is a token of its own ("in 1" -> `in`, ` `, `1`); BOS `<|begin_of_text|>` added by the
  tokenizer itself, EOS `<|end_of_text|>`.
- `no_bos` (Qwen, SmolLM): the llama3_style pre-tokenizer with no BOS token at all; EOS = pad =
  `<|endoftext|>`.

`bare` (keyword-only, default: every word) chooses which words also get their no-space form as a
whole token (GPT-2 and llama3 spell a prompt's first word without a space: "Mary" is not " Mary");
leave a word out to model a real vocabulary where only the mid-prompt form is one token.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
# Qwen2's split (Llama 3's with `\p{N}` in place of `\p{N}{1,3}`): letters keep one leading
# non-letter (a space), every digit stands alone, a space before a digit is its own piece.
DIGIT_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ASCII_TEXT = string.ascii_letters + string.digits + string.punctuation


def _train(core: Tokenizer, texts: list[str], special: list[str], alphabet: list[str]) -> None:
    """BPE merges trained until no pair is left: every training text's piece is one token."""
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000,
        min_frequency=1,
        special_tokens=special,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)


def _texts(words: Iterable[str], bare: Iterable[str] | None) -> list[str]:
    words = list(dict.fromkeys(words))
    starts = words if bare is None else list(dict.fromkeys(bare))
    return [" " + w for w in words] + starts


def _byte_level(digit_split: bool) -> Tokenizer:
    core = Tokenizer(models.BPE())
    if digit_split:
        core.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(DIGIT_SPLIT_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return core


def _adds_bos(core: Tokenizer, bos: str, trim: processors.PostProcessor | None = None) -> None:
    template = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, core.token_to_id(bos))]
    )
    core.post_processor = template if trim is None else processors.Sequence([trim, template])


def gpt2_bpe(words: Iterable[str], *, bare: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """GPT-2: byte-level BPE with leading-space tokens; `<|endoftext|>` is BOS/EOS, never added."""
    core = _byte_level(digit_split=False)
    _train(core, _texts(words, bare), [ENDOFTEXT], pre_tokenizers.ByteLevel.alphabet())
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT
    )


def sentencepiece_style(
    words: Iterable[str], *, bare: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """Llama 2 / Gemma: `▁` words, single digits after a lone `▁`, `<unk>`, BOS `<s>` added itself.

    `bare` is accepted for a uniform signature; with `▁` prepended to the first word a prompt's
    first word is spelled like any other, so there is no separate no-space form.
    """
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    _train(core, _texts(words, []), ["<unk>", "<s>", "</s>"], ["▁", *ASCII_TEXT])
    _adds_bos(core, "<s>")
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True
    )


def llama3_style(words: Iterable[str], *, bare: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Llama 3: byte-level BPE, single digits after a lone space token, BOS added by the tokenizer."""
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    core = _byte_level(digit_split=True)
    _train(core, _texts(words, bare), [bos, eos], pre_tokenizers.ByteLevel.alphabet())
    _adds_bos(core, bos, processors.ByteLevel(trim_offsets=False))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, add_bos_token=True)


def no_bos(words: Iterable[str], *, bare: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Qwen / SmolLM: byte-level BPE with single digits, no BOS token; EOS = pad = <|endoftext|>."""
    core = _byte_level(digit_split=True)
    _train(core, _texts(words, bare), [ENDOFTEXT], pre_tokenizers.ByteLevel.alphabet())
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT)


def llama2_legacy(words: Iterable[str], *, bare: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """`sentencepiece_style` as Llama 2's hub files spell it: `▁` by normalizers, no pre-tokenizer.

    The normalizer prepends `▁` to the whole text and turns every space into `▁`, so a text that
    starts with a space starts with `▁▁` (" 1" -> `▁ ▁ 1`); not in TOKENIZER_KINDS, to keep the
    model-family tests at four kinds.
    """
    core = sentencepiece_style(words).backend_tokenizer
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.pre_tokenizer = None
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True
    )


TOKENIZER_KINDS: dict[str, Callable[..., PreTrainedTokenizerFast]] = {
    "gpt2_bpe": gpt2_bpe,
    "sentencepiece_style": sentencepiece_style,
    "llama3_style": llama3_style,
    "no_bos": no_bos,
}
