"""Fixtures: tiny GPT-2-architecture models saved to temporary Hugging Face directories."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from headscope.models.loading import Model, load_model
from headscope.models.organism.tokenizer import word_level_tokenizer
from headscope.tasks.vocabulary import task_vocabulary


@pytest.fixture(scope="session")
def vocabulary() -> list[str]:
    return task_vocabulary()


def save_tiny_gpt2(
    directory: Path,
    vocabulary: list[str],
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 32,
    seed: int = 0,
) -> Path:
    """A random GPT-2 with a word-level tokenizer, saved as config + safetensors + tokenizer."""
    tokenizer = word_level_tokenizer(vocabulary)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # non-trivial layer norms, so folding them changes the weights
        for name, param in model.named_parameters():
            if "ln" in name:
                param.add_(0.3 * torch.randn_like(param))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, vocabulary) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny"), vocabulary)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir) -> Model:
    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory) -> Callable[[str], Path]:
    """A tiny model of a named family (tests/models/families.py), saved once per session."""
    from tests.models import families as fam

    root = tmp_path_factory.mktemp("families")

    @functools.cache
    def saved(name: str) -> Path:
        return fam.save_family(fam.BY_NAME[name], root / name)

    return saved
