"""The intervals against scipy: binomtest's Wilson and exact intervals, t.interval, bootstrap."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headscope.scores.intervals import (
    clopper_pearson,
    cluster_bootstrap_share,
    paired_t_interval,
    t_interval,
    wilson,
)

CASES = [(0, 7), (3, 7), (7, 7), (1, 20), (37, 950), (500, 1000), (949, 950)]


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_wilson_and_exact_match_scipy_binomtest(level):
    k, n = np.array(CASES).T
    for ours, method in ((wilson, "wilson"), (clopper_pearson, "exact")):
        low, high = ours(pd.Series(k), pd.Series(n), level)  # columns work as arrays
        for i, (ki, ni) in enumerate(CASES):
            theirs = stats.binomtest(int(ki), int(ni)).proportion_ci(confidence_level=level, method=method)
            assert low[i] == pytest.approx(theirs.low, abs=1e-12), (method, ki, ni)
            assert high[i] == pytest.approx(theirs.high, abs=1e-12), (method, ki, ni)


def test_share_intervals_contain_the_share_and_are_nan_without_units():
    k, n = np.array([[0, 5, 9], [0, 10, 10]])
    for interval in (wilson, clopper_pearson):
        low, high = interval(k, n)
        assert np.isnan(low[0]) and np.isnan(high[0])
        assert (low[1:] <= k[1:] / n[1:]).all() and (k[1:] / n[1:] <= high[1:]).all()
        assert (low[1:] >= 0).all() and (high[1:] <= 1).all()
    assert (clopper_pearson(k, n)[1][1:] - clopper_pearson(k, n)[0][1:] > 0).all()


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_t_interval_matches_scipy_per_row(level):
    values = np.random.default_rng(0).normal(1.5, 2.0, (4, 30))
    values[2, :25] = np.nan  # five units in that row: NaN is not a unit
    low, high = t_interval(values, level=level)
    for row, (lo, hi) in zip(values, zip(low, high, strict=True), strict=True):
        units = row[~np.isnan(row)]
        theirs = stats.t.interval(level, len(units) - 1, loc=units.mean(), scale=stats.sem(units))
        assert (lo, hi) == pytest.approx(theirs, abs=1e-12)
    column_low, _ = t_interval(values.T, axis=0, level=level)
    assert column_low == pytest.approx(low, abs=1e-12)


def test_t_interval_needs_two_units():
    low, high = t_interval(np.array([[1.0, np.nan], [2.0, 2.0]]))
    assert np.isnan(low[0]) and np.isnan(high[0]) and low[1] == high[1] == 2.0


def test_paired_interval_uses_per_prompt_differences():
    rng = np.random.default_rng(1)
    prompt = rng.normal(0, 5, 40)  # a prompt effect both statistics share
    clean, knocked = prompt + 3.0, prompt + 2.5 + rng.normal(0, 0.1, 40)
    low, high = paired_t_interval(knocked, clean)
    diff = knocked - clean
    theirs = stats.t.interval(0.95, 39, loc=diff.mean(), scale=stats.sem(diff))
    assert (low, high) == pytest.approx(theirs, abs=1e-12)
    assert high - low < 0.1  # unpaired, the prompt effect would make it ~3 wide


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_cluster_bootstrap_with_one_row_per_cluster_is_scipys_percentile_bootstrap(level):
    rows = np.random.default_rng(2).random((3, 60)) < np.array([[0.1], [0.5], [0.9]])  # [cell, prompt]
    low, high = cluster_bootstrap_share(rows, np.ones(60), level=level, resamples=999, seed=7)
    for cell, (lo, hi) in enumerate(zip(low, high, strict=True)):
        theirs = stats.bootstrap(
            (rows[cell].astype(float),),
            np.mean,
            n_resamples=999,
            method="percentile",
            confidence_level=level,
            rng=np.random.default_rng(7),
        ).confidence_interval
        assert (lo, hi) == pytest.approx((theirs.low, theirs.high), abs=1e-12)


def test_cluster_bootstrap_resamples_prompts_not_rows():
    # 40 prompts of 10 rows each, every row of a prompt alike: 40 units, not 400
    prompt_hit = np.random.default_rng(3).random(40) < 0.5
    hits, rows = 10.0 * prompt_hit, np.full(40, 10.0)
    low, high = cluster_bootstrap_share(hits, rows, seed=0)
    per_prompt = stats.bootstrap(
        (prompt_hit.astype(float),), np.mean, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    assert (low, high) == pytest.approx((per_prompt.low, per_prompt.high), abs=1e-12)
    row_low, row_high = wilson(hits.sum(), rows.sum())
    assert high - low > 2.5 * (row_high - row_low)  # rows taken as independent: far too narrow
    again = cluster_bootstrap_share(hits, rows, seed=0)
    assert again == (low, high)  # seeded


def test_cluster_wilson_counts_a_cluster_of_identical_rows_as_one_row():
    from headscope.scores.intervals import cluster_wilson, wilson

    hits = np.array([4.0, 0, 0, 4, 0, 0, 0, 4, 0, 0])  # 10 prompts of 4 rows, each all hits or none
    low, high = cluster_wilson(hits, np.full(10, 4.0))
    one_each = wilson(0.3 * 9, 9)  # the design effect 4 x m/(m-1): 40 rows count as 9, 0.3 of them hits
    assert (float(low), float(high)) == pytest.approx((float(one_each[0]), float(one_each[1])))
    independent = cluster_wilson(np.array([1.0, 0, 0, 1, 0, 1, 0, 0, 0, 0]), np.ones(10))
    assert float(independent[1]) == pytest.approx(float(wilson(3 * 9 / 10, 9)[1]))  # m/(m-1): 10 -> 9


def test_cluster_wilson_covers_rare_clustered_shares():
    """Coverage by simulation: prompts of 3 rows sharing a per-prompt rate (a beta around p), shares
    of 0.005-0.05, 50 prompts, 2,000 seeded runs each: at least 0.93 at nominal 0.95."""
    from headscope.scores.intervals import cluster_wilson

    rng = np.random.default_rng(0)
    for p in (0.005, 0.02, 0.05):
        rates = rng.beta(p * 20, (1 - p) * 20, size=(2000, 50))  # [run, prompt]
        hits = rng.binomial(3, rates).astype(float)
        low, high = cluster_wilson(hits, np.full(50, 3.0))
        covered = np.mean((low <= p) & (p <= high))
        assert covered >= 0.93, (p, covered)
