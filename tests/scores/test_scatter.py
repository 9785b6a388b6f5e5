"""Scatter points against a per-prompt loop over run_with_cache; statistics against scipy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from headscope.capture import capture
from headscope.errors import HeadscopeError
from headscope.scores.scatter import (
    SCATTER_NEEDS,
    bootstrap_r,
    default_roles,
    scatter_points,
    scatter_stats,
)
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


@pytest.fixture(scope="module")
def ioi(tiny_model):
    dataset = build_dataset(get_task("ioi"), tiny_model.tokens, 10, seed=5)
    return dataset, capture(tiny_model, dataset, SCATTER_NEEDS)


def reference_points(model, dataset, head, role_members, scale):
    """x and y of each prompt, from a full cache of that prompt alone (no padding)."""
    layer, index = head
    W_O = model.bridge.W_O[layer, index].detach()
    hf = model.bridge.original_model  # the unembedding through HF's own ln_f and lm_head
    gain, lm_head = hf.transformer.ln_f.weight.detach(), hf.lm_head.weight.detach()
    rows = []
    for i in range(dataset.n):
        member = next(m for m in role_members if bool(dataset.roles[m].present[i]))
        length = int(dataset.lengths[i])
        tokens = dataset.tokens[i, :length]
        token = int(tokens[int(dataset.roles[member].index[i])])
        _, cache = model.bridge.run_with_cache(tokens[None])
        end = length - 1
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, index, end]  # [k]
        x = sum(float(pattern[p]) for p in range(length) if int(tokens[p]) == token)
        z = cache[f"blocks.{layer}.attn.hook_z"][0, end, index]  # [d_head]
        result = z @ W_O  # [d_model]
        y = float(((result - result.mean()) * gain) @ lm_head[token])
        if scale == "ln_final":
            y /= float(cache["ln_final.hook_scale"][0, end, 0])
        rows.append((i, token, x, y))
    return rows


@pytest.mark.parametrize("scale", ["none", "ln_final"])
@pytest.mark.parametrize("head", [(0, 2), (1, 1)])
def test_points_equal_a_loop_over_run_with_cache(tiny_model, ioi, scale, head):
    dataset, cap = ioi
    points = scatter_points(tiny_model.weights, dataset, cap, head, ["IO", "S"], scale)
    assert list(points.columns[:3]) == ["prompt", "role", "token"]
    for role in ("IO", "S"):
        got = points[points.role == role].reset_index(drop=True)
        expected = reference_points(tiny_model, dataset, head, dataset.role_names(role), scale)
        assert len(got) == len(expected) == dataset.n
        for row, (i, token, x, y) in zip(got.itertuples(), expected, strict=True):
            assert (row.prompt, row.token) == (i, token)
            assert row.attention == pytest.approx(x, abs=1e-5)
            assert row.projection == pytest.approx(y, abs=1e-4, rel=1e-4)


def test_s_sums_both_occurrences(tiny_model, ioi):
    dataset, cap = ioi
    points = scatter_points(tiny_model.weights, dataset, cap, (1, 0), ["S", "S1"])
    s = points[points.role == "S"].reset_index(drop=True)
    s1 = points[points.role == "S1"].reset_index(drop=True)
    # S1 and S2 hold the same name, so attention on the token S1 already counts both.
    np.testing.assert_allclose(s.attention, s1.attention)
    pattern = cap.pattern_end[:, 1, 0]
    rows = np.arange(dataset.n)
    both = pattern[rows, dataset.roles["S1"].index] + pattern[rows, dataset.roles["S2"].index]
    np.testing.assert_allclose(s.attention, both.numpy(), atol=1e-6)


def test_absent_roles_are_left_out(tiny_model):
    dataset = build_dataset(get_task("recency"), tiny_model.tokens, 12, seed=2)
    cap = capture(tiny_model, dataset, SCATTER_NEEDS)
    points = scatter_points(tiny_model.weights, dataset, cap, (0, 0), ["S_r1", "S_r3"])
    present = dataset.roles["S_r3"].present
    assert 0 < int(present.sum()) < dataset.n
    assert sorted(points[points.role == "S_r3"].prompt) == np.nonzero(present.numpy())[0].tolist()


def test_default_roles_are_answer_and_contrast_group(tiny_model, ioi):
    assert default_roles(ioi[0]) == ["IO", "S"]
    induction = build_dataset(get_task("induction"), tiny_model.tokens, 2, seed=0)
    with pytest.raises(HeadscopeError, match="--roles"):
        default_roles(induction)


def random_points(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, 60)
    y = 2 * x + rng.normal(0, 0.7, 60)
    return pd.DataFrame(
        {"prompt": np.arange(60) % 30, "role": ["IO"] * 30 + ["S"] * 30, "attention": x, "projection": y}
    )


def test_stats_equal_scipy_per_role_and_pooled():
    points = random_points()
    table = scatter_stats(points, n_boot=200, seed=1).set_index("role")
    assert list(table.index) == ["IO", "S", "pooled"]
    for role, part in [("IO", points[:30]), ("S", points[30:]), ("pooled", points)]:
        expected = stats.pearsonr(part.attention, part.projection)
        assert table.loc[role, "r"] == pytest.approx(expected.statistic, abs=1e-12)
        assert table.loc[role, "p"] == pytest.approx(expected.pvalue, rel=1e-9)
        assert table.loc[role, "n"] == len(part)
        assert table.loc[role, "ci_low"] < table.loc[role, "r"] < table.loc[role, "ci_high"]


def test_bootstrap_equals_a_plain_loop_and_is_seeded():
    points = random_points(3)
    x, y = points.attention.to_numpy(), points.projection.to_numpy()
    fast = bootstrap_r(x, y, 50, seed=7)
    picks = np.random.default_rng(7).integers(0, len(x), size=(50, len(x)))
    slow = [stats.pearsonr(x[p], y[p]).statistic for p in picks]
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    table = scatter_stats(points, n_boot=300, seed=4)
    low, high = np.percentile(bootstrap_r(x, y, 300, seed=4), [2.5, 97.5])
    pooled = table[table.role == "pooled"].iloc[0]
    assert (pooled.ci_low, pooled.ci_high) == pytest.approx((low, high))
    pd.testing.assert_frame_equal(table, scatter_stats(points, n_boot=300, seed=4))
    assert not table.equals(scatter_stats(points, n_boot=300, seed=5))


def test_degenerate_points_give_nan_not_an_error():
    points = pd.DataFrame(
        {"prompt": [0, 1, 2], "role": "IO", "attention": [0.5] * 3, "projection": [1.0, 2.0, 3.0]}
    )
    row = scatter_stats(points).iloc[0]
    assert np.isnan(row.r) and np.isnan(row.ci_low) and row.n == 3


def folded(weights):
    """The weights as TransformerLens folds them: ln_f gain and bias into W_U / b_U, writers centred."""
    W_U = weights.lnf_w[:, None] * weights.W_U  # [d_model, d_vocab]
    return replace(
        weights,
        W_U=W_U - W_U.mean(0, keepdim=True),
        b_U=weights.b_U + weights.lnf_b @ weights.W_U,
        lnf_w=torch.ones_like(weights.lnf_w),
        lnf_b=torch.zeros_like(weights.lnf_b),
        W_O=weights.W_O - weights.W_O.mean(-1, keepdim=True),
    )


@pytest.mark.parametrize("scale", ["none", "ln_final"])
def test_points_do_not_change_when_layer_norms_are_folded(tiny_model, ioi, scale):
    dataset, cap = ioi
    raw = scatter_points(tiny_model.weights, dataset, cap, (1, 3), ["IO", "S"], scale)
    fold = scatter_points(folded(tiny_model.weights), dataset, cap, (1, 3), ["IO", "S"], scale)
    assert not torch.allclose(folded(tiny_model.weights).W_U, tiny_model.weights.W_U)
    np.testing.assert_allclose(fold.projection, raw.projection, rtol=1e-4, atol=1e-6)
