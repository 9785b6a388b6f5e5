"""Attention entropy at `end` against a plain loop over run_with_cache, through all three front ends."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from scipy import stats

import headscope as hs
from headscope.analyses.attention import ATTENTION_ENTROPY
from headscope.capture import Capture, capture
from headscope.scores.attention import ENTROPY_NEEDS, end_entropy
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.cli.runner import run_cli


def reference_entropies(model, dataset, layer: int, head: int) -> list[float]:
    """-sum_k p log p of the row at `end` of each prompt, one unpadded prompt at a time."""
    values = []
    for i in range(dataset.n):
        length = int(dataset.lengths[i])
        _, cache = model.bridge.run_with_cache(dataset.tokens[i : i + 1, :length])
        row = cache[f"blocks.{layer}.attn.hook_pattern"][0, head, length - 1].tolist()
        values.append(-sum(p * math.log(p) for p in row if p > 0))
    return values


@pytest.mark.parametrize("task", ["ioi", "induction"])
def test_entropy_equals_a_loop_over_run_with_cache(tiny_model, task):
    dataset = build_dataset(get_task(task), tiny_model.tokens, 6, 2)
    table = end_entropy(dataset, capture(tiny_model, dataset, ENTROPY_NEEDS))
    assert len(table) == tiny_model.n_layers * tiny_model.n_heads and set(table["n"]) == {6}
    for row in table.itertuples(index=False):
        values = reference_entropies(tiny_model, dataset, row.layer, row.head)
        assert row.entropy == pytest.approx(sum(values) / len(values), abs=1e-5)
        interval = stats.t.interval(0.95, len(values) - 1, loc=row.entropy, scale=stats.sem(values))
        assert (row.ci_low, row.ci_high) == pytest.approx(interval, abs=1e-5) and row.ci_kind == "t"


def test_entropy_of_hand_made_rows():
    """One token: 0; spread evenly over 4 positions: log 4; padding past `end` counts nothing."""
    rows = torch.zeros(2, 1, 2, 6)  # [batch, layer, head, pos]
    rows[:, 0, 0, 2] = 1.0
    rows[:, 0, 1, :4] = 0.25
    table = end_entropy(SimpleNamespace(n=2), Capture(pattern_end=rows))  # the dataset gives n only
    assert table["entropy"].tolist() == pytest.approx([0.0, math.log(4)])


def test_the_three_front_ends_give_the_same_table(tiny_model, tiny_dir, tmp_path):
    dataset = build_dataset(get_task("ioi"), tiny_model.tokens, 8, 0)
    expected = ATTENTION_ENTROPY.run(tiny_model, dataset)
    api = hs.attention_entropy(tiny_model, "ioi", n=8)
    pd.testing.assert_frame_equal(api, expected)
    out = tmp_path / "entropy.csv"
    done = run_cli("entropy", "--model", str(tiny_dir), "--task", "ioi", "--n", "8", "--out", str(out))
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out), expected, check_dtype=False)
