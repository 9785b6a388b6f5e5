"""A circuit's stability under bootstrap resamples of its prompts, against a plain reference loop,
hand-built per-prompt scores with a known answer, and the ranking that chose the circuit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from headscope.analyses.circuit import circuit_stability
from headscope.scores.circuit import stability as S
from headscope.scores.circuit.edges import EdgeScores


def reference(values: np.ndarray, chosen: list[int], resamples: int, seed: int) -> tuple[float, float]:
    """The same definition one resample and one edge at a time: Python means, sorted() and sets."""
    size, overlaps = len(chosen), []
    for drawn in S.resample_indices(values.shape[1], resamples, seed):
        means = [sum(row[j] for j in drawn) / len(drawn) for row in values.tolist()]
        order = sorted(range(len(means)), key=lambda i: (math.isnan(means[i]), -abs(means[i]), i))
        top = set(order[:size])
        overlaps.append(len(top & set(chosen)) / len(top | set(chosen)))
    return sum(overlaps) / len(overlaps), float(np.percentile(overlaps, S.LOW_PERCENTILE))


def test_jaccard_is_intersection_over_union():
    assert S.jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert S.jaccard({1}, {2}) == 0.0 and S.jaccard({1, 2}, {2, 1}) == 1.0 and S.jaccard(set(), set()) == 1.0


@pytest.mark.parametrize("size", [1, 4, 11])
def test_stability_equals_the_plain_reference_loop(size):
    rng = np.random.default_rng(7)
    values = rng.normal(size=(30, 9)) + np.linspace(2, -2, 30)[:, None]  # [edge, prompt]
    chosen = np.argsort(-np.abs(values.mean(1)), kind="stable")[:size]
    found = S.stability(values, chosen, resamples=60, seed=3)
    mean, low = reference(values, list(chosen), 60, 3)
    assert found.mean == pytest.approx(mean, abs=1e-12) and found.low == pytest.approx(low, abs=1e-12)
    assert found.resamples == 60 and 0 <= found.low <= found.mean < 1  # the prompts disagree: not 1


def test_an_edge_without_a_value_ranks_last_as_in_the_reference():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(12, 6))
    values[[2, 5]] = np.nan  # not patched exactly
    chosen = np.array([0, 1, 3, 4, 6, 7, 8, 9, 10, 11, 2])  # every valued edge, then a NaN one
    found = S.stability(values, chosen, resamples=40, seed=0)
    assert (found.mean, found.low) == pytest.approx(reference(values, list(chosen), 40, 0))
    assert found.mean == 1.0  # the ten valued edges always lead; the NaN rows keep their table order


def test_prompts_that_agree_give_stability_one():
    scores = np.array([3.0, -2.5, 2.0, 1.0, -0.5, 0.25])  # distinct magnitudes: no ties
    values = np.repeat(scores[:, None], 8, axis=1)  # every prompt gives the same scores
    found = S.stability(values, np.array([0, 1, 2]), seed=5)
    assert (found.mean, found.low, found.resamples) == (1.0, 1.0, S.RESAMPLES) and found.stable


def test_prompts_that_disagree_give_the_known_lower_stability():
    """Two edges, two prompts: edge 0 wins prompt 0, edge 1 prompt 1, ties go to edge 0 (table
    order). A resample draws (0,0), (0,1), (1,0) or (1,1) with probability 1/4 each: the one-edge
    circuit {0} is picked again with probability 3/4, so the mean Jaccard is 0.75."""
    values = np.array([[1.0, 0.0], [0.0, 1.0]])
    found = S.stability(values, np.array([0]), resamples=20000, seed=0)
    assert found.mean == pytest.approx(0.75, abs=0.01) and found.low == 0.0 and not found.stable


def test_the_same_seed_gives_the_same_value_and_another_seed_its_own_draws():
    values = np.random.default_rng(2).normal(size=(40, 10))
    chosen = np.arange(8)
    first, again = S.stability(values, chosen, seed=11), S.stability(values, chosen, seed=11)
    assert first == again
    assert (S.resample_indices(10, 5, 11) != S.resample_indices(10, 5, 12)).any()


def test_one_prompt_cannot_be_resampled():
    found = S.stability(np.ones((5, 1)), np.array([0, 1]))
    assert math.isnan(found.mean) and math.isnan(found.low) and found.resamples == 0
    assert S.verdict(found.mean, found.stable) == "not measured"


def test_the_verdict_names_meloux_et_als_line():
    assert S.STABLE == 0.8
    assert S.Stability(0.8, 0.6, 200).stable and not S.Stability(0.79, 0.6, 200).stable
    assert S.verdict(0.9, True) == "stable (Méloux et al. 0.8)"
    assert S.verdict(0.67, False) == "unstable: below Méloux et al.'s 0.8"
    assert S.Stability(0.9, 0.7, 200).row() == {
        "stability": 0.9,
        "stability_low": 0.7,
        "stability_resamples": 200,
        "stable": True,
    }


def test_the_circuit_is_resampled_in_the_ranking_that_chose_it():
    """Scores rank edges 0, 1, 2, 3; exact patching (on 0..2 only) ranks 2, 1, 0. With prompts that
    agree, each ranking picks its own circuit again every time (1.0); the other's would not."""
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    exact = np.array([0.5, 1.5, 2.5, np.nan])
    table = pd.DataFrame({"score": scores, "exact": exact})
    scored = EdgeScores(table, np.repeat(scores[:, None], 6, 1), np.repeat(exact[:, None], 6, 1))
    by_score, by_exact = table.loc[[0, 1]], table.loc[[2, 1]]
    assert circuit_stability(scored, by_score, True, 50, 0).mean == 1.0
    assert circuit_stability(scored, by_exact, False, 50, 0).mean == 1.0
    assert circuit_stability(scored, by_exact, True, 50, 0).mean == pytest.approx(1 / 3)
    no_exact = EdgeScores(table.assign(exact=np.nan), scored.score_rows, scored.exact_rows * np.nan)
    assert circuit_stability(no_exact, by_score, False, 50, 0).mean == 1.0  # |score|, as circuit_edges
