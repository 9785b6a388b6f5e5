"""Dataset.subset against tokenising the chosen pairs afresh; require_corrupted's one line."""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headscope.errors import HeadscopeError
from headscope.tasks.builtin import builtin_tasks
from headscope.tasks.dataset import (
    Dataset,
    TaskError,
    build_dataset,
    dataset_from_pairs,
    missing_corrupted,
    require_corrupted,
)
from headscope.tasks.prompt import PromptPair

N = 12
TASKS = sorted(builtin_tasks())


def assert_same(got: Dataset, want: Dataset) -> None:
    """Every field a score reads, the twin's included, equal (tensors exactly)."""
    assert got.task == want.task and got.prompts == want.prompts
    for name in ("tokens", "lengths", "answers", "contrasts"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.roles.keys() == want.roles.keys()
    for role, where in want.roles.items():
        assert torch.equal(got.roles[role].index, where.index), role
        assert torch.equal(got.roles[role].present, where.present), role
    for name in ("batch", "position", "token"):
        assert torch.equal(getattr(got.keywords, name), getattr(want.keywords, name)), name
    assert (got.keywords.words, got.keywords.roles) == (want.keywords.words, want.keywords.roles)
    if want.corrupted is not None:
        assert_same(got.corrupted, want.corrupted)


def afresh(data: Dataset, indices: list[int], tokens) -> Dataset:
    """The reference: the chosen pairs tokenised again from their text."""
    pairs = [PromptPair(data.prompts[i], data.corrupted.prompts[i]) for i in indices]
    return dataset_from_pairs(data.task, pairs, tokens)


@pytest.fixture(scope="module")
def datasets(tiny_model):
    @cache
    def of(name: str) -> Dataset:
        return build_dataset(builtin_tasks()[name], tiny_model.tokens, N, seed=5)

    return of


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(TASKS), indices=st.lists(st.integers(0, N - 1), min_size=1, max_size=N))
def test_a_subset_is_its_prompts_tokenised_afresh(datasets, tiny_model, name, indices):
    data = datasets(name)
    assert_same(data.subset(indices), afresh(data, indices, tiny_model.tokens))


@pytest.mark.parametrize("name", TASKS)
def test_a_count_takes_the_first_prompts(datasets, tiny_model, name):
    data = datasets(name)
    assert_same(data.subset(3), afresh(data, [0, 1, 2], tiny_model.tokens))
    assert data.subset(N) is data and data.subset(N + 5) is data


def test_a_subset_cuts_rows_to_its_longest_prompt(datasets):
    data = datasets("ioi")
    shortest = int(data.lengths.argmin())
    assert int(data.lengths[shortest]) < data.tokens.shape[1], "the seed should give prompts of two lengths"
    alone = data.subset([shortest])
    assert alone.tokens.shape == (1, int(data.lengths[shortest]))
    assert alone.corrupted.tokens.shape == alone.tokens.shape


@pytest.mark.parametrize("chosen", [[N], [-1], [0, N + 3], [True], 0, -2, []])
def test_a_bad_subset_names_the_range(datasets, chosen):
    with pytest.raises(TaskError, match=r"prompts 0-11|at least"):
        datasets("ioi").subset(chosen)


def test_require_corrupted_names_the_analysis_and_the_fix(datasets):
    data = datasets("ioi")
    assert require_corrupted(data, "patching") is data.corrupted
    assert missing_corrupted(data, "patching") is None
    alone = dataclasses.replace(data, corrupted=None)
    with pytest.raises(HeadscopeError) as refused:
        require_corrupted(alone, "edge patching")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("task ioi has no corrupted twin, which edge patching needs; build the dataset")
    with pytest.raises(HeadscopeError, match=r"which mean ablation needs; use method='zero'$"):
        require_corrupted(alone, "mean ablation", fix="use method='zero'")
    assert missing_corrupted(alone, "x") == "task ioi has no corrupted twin, which x needs"
