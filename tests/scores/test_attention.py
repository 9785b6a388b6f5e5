"""Role-to-role attention against a plain loop over run_with_cache; detectors on hand-made patterns."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from headscope.capture import Capture, capture
from headscope.scores.attention import (
    DETECTOR_NEEDS,
    ROLE_ATTENTION_NEEDS,
    head_detectors,
    ideal_patterns,
    pattern_frame,
    pattern_records,
    role_attention,
)
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


def reference_role_attention(model, dataset, query: str, key_members: tuple[str, ...], layer: int, head: int):
    """Mean over prompts holding both roles of the summed attention, one unpadded prompt at a time."""
    values = []
    for i in range(dataset.n):
        present = [m for m in key_members if bool(dataset.roles[m].present[i])]
        if not bool(dataset.roles[query].present[i]) or not present:
            continue
        tokens = dataset.tokens[i : i + 1, : int(dataset.lengths[i])]
        _, cache = model.bridge.run_with_cache(tokens)
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, head]  # [q, k]
        q = int(dataset.roles[query].index[i])
        values.append(sum(float(pattern[q, int(dataset.roles[m].index[i])]) for m in present))
    return float(np.mean(values)) if values else float("nan"), values


@pytest.mark.parametrize(
    "task, query, key", [("ioi", "end", "S"), ("ioi", "S2", "IO"), ("recency", "end", "S_r3")]
)
def test_role_attention_equals_a_loop_over_run_with_cache(tiny_model, task, query, key):
    dataset = build_dataset(get_task(task), tiny_model.tokens, 12, seed=3)
    table = role_attention(dataset, capture(tiny_model, dataset, ROLE_ATTENTION_NEEDS))
    members = dataset.role_names(key)
    for layer, head in [(0, 1), (1, 3)]:
        row = table[
            (table.layer == layer)
            & (table["head"] == head)
            & (table.query_role == query)
            & (table.key_role == key)
        ]
        expected, values = reference_role_attention(tiny_model, dataset, query, members, layer, head)
        assert len(row) == 1
        assert int(row["n"].iloc[0]) == len(values)
        assert row["attention"].iloc[0] == pytest.approx(expected, abs=1e-5)
        interval = stats.t.interval(0.95, len(values) - 1, loc=expected, scale=stats.sem(values))
        assert (row.ci_low.iloc[0], row.ci_high.iloc[0]) == pytest.approx(interval, abs=1e-5)
        assert row.ci_kind.iloc[0] == "t"


def test_role_attention_covers_every_role_and_group(tiny_model):
    dataset = build_dataset(get_task("ioi"), tiny_model.tokens, 4, seed=0)
    table = role_attention(dataset, capture(tiny_model, dataset, ROLE_ATTENTION_NEEDS))
    assert set(table.key_role) == set(dataset.roles) | {"S"}
    assert set(table.query_role) == set(dataset.roles)
    assert len(table) == 2 * 4 * len(dataset.roles) * (len(dataset.roles) + 1)
    s = table[table.key_role == "S"].set_index(["layer", "head", "query_role"])["attention"]
    s1 = table[table.key_role == "S1"].set_index(["layer", "head", "query_role"])["attention"]
    s2 = table[table.key_role == "S2"].set_index(["layer", "head", "query_role"])["attention"]
    np.testing.assert_allclose(s, s1 + s2, atol=1e-6)


# Hand-made prompts: BOS=0, then a b c a b c (length 7), and d e d e (length 5, two pads).
TOKENS = torch.tensor([[0, 5, 6, 7, 5, 6, 7], [0, 8, 9, 8, 9, 0, 0]])
LENGTHS = torch.tensor([7, 5])
HAND = SimpleNamespace(tokens=TOKENS, lengths=LENGTHS)
# query -> the key of each ideal pattern, per prompt (rows with no ideal key are absent).
IDEAL_KEYS = {
    "previous_token": [{q: q - 1 for q in range(1, 7)}, {q: q - 1 for q in range(1, 5)}],
    "duplicate_token": [{4: 1, 5: 2, 6: 3}, {3: 1, 4: 2}],
    "induction": [{4: 2, 5: 3, 6: 4}, {3: 2, 4: 3}],
}


def hand_pattern(detector: str, weight_on_ideal: float) -> torch.Tensor:
    """[batch, layer=1, head=1, q, k]: `weight_on_ideal` on the ideal key, the rest on BOS;
    rows with no ideal key attend to themselves; pad rows hold junk that must be ignored."""
    pattern = torch.zeros(2, 1, 1, 7, 7)
    for b in range(2):
        for q in range(int(LENGTHS[b])):
            key = IDEAL_KEYS[detector][b].get(q)
            if key is None:
                pattern[b, 0, 0, q, q] = 1.0
            else:
                pattern[b, 0, 0, q, key] += weight_on_ideal
                pattern[b, 0, 0, q, 0] += 1 - weight_on_ideal
        pattern[b, 0, 0, int(LENGTHS[b]) :, 0] = 1.0  # padding rows: must not count
    return pattern


@pytest.mark.parametrize("detector", ["previous_token", "duplicate_token", "induction"])
def test_detectors_score_one_on_their_ideal_pattern(detector):
    table = head_detectors(HAND, Capture(pattern_full=hand_pattern(detector, 1.0)))
    assert table[detector].iloc[0] == pytest.approx(1.0)


def test_detectors_on_a_mixture():
    # induction rows: 0.6 on the ideal key, 0.4 on BOS -> 0.6 (5 scored rows, each 0.6).
    assert head_detectors(HAND, Capture(pattern_full=hand_pattern("induction", 0.6)))["induction"].iloc[
        0
    ] == pytest.approx(0.6)
    # half previous-token, half uniform over the causal keys: by hand, row by row.
    pattern = torch.zeros(2, 1, 1, 7, 7)
    expected_rows = []
    for b in range(2):
        for q in range(int(LENGTHS[b])):
            pattern[b, 0, 0, q, : q + 1] = 0.5 / (q + 1)
            pattern[b, 0, 0, q, max(q - 1, 0)] += 0.5
            if q >= 1:
                expected_rows.append(0.5 + 0.5 / (q + 1))
    score = head_detectors(HAND, Capture(pattern_full=pattern))["previous_token"].iloc[0]
    assert score == pytest.approx(np.mean(expected_rows))


def test_detectors_on_the_model_are_shares(tiny_model):
    dataset = build_dataset(get_task("induction"), tiny_model.tokens, 6, seed=1)
    table = head_detectors(dataset, capture(tiny_model, dataset, DETECTOR_NEEDS))
    assert len(table) == 8
    values = table[["previous_token", "duplicate_token", "induction"]].to_numpy()
    assert ((values >= 0) & (values <= 1 + 1e-6)).all()


def test_pattern_frame_and_records_label_tokens():
    pattern = torch.tril(torch.rand(1, 1, 3, 3))
    frame = pattern_frame(pattern[0, 0], ["<s>", "a", "b"])
    assert list(frame.index) == ["0:<s>", "1:a", "2:b"]
    assert frame.loc["2:b", "1:a"] == pytest.approx(float(pattern[0, 0, 2, 1]))
    records = pattern_records(pattern, [(0, 0)], ["<s>", "a", "b"])
    assert len(records) == 6  # the causal half of 3 x 3
    row = records[(records.destination == 2) & (records.source == 1)]
    assert row.attention.iloc[0] == pytest.approx(float(pattern[0, 0, 2, 1]))
    assert row.source_token.iloc[0] == "a"


def test_detector_intervals_resample_prompts(tiny_model):
    """Each detector score's interval: scipy's percentile bootstrap over prompts of the ratio of the
    two sums (paired, the same seeded draws), the sums taken by a plain loop over each prompt."""
    dataset = build_dataset(get_task("induction"), tiny_model.tokens, 12, seed=1)
    taken = capture(tiny_model, dataset, DETECTOR_NEEDS)
    table = head_detectors(dataset, taken)
    assert (table["n"] == 12).all() and (table["ci_kind"] == "cluster-bootstrap").all()
    pattern = taken.pattern_full
    ideals = ideal_patterns(dataset.tokens[:, : pattern.shape[-1]], dataset.lengths)
    for name in ("previous_token", "induction"):
        for row in table.itertuples(index=False):
            on, total = [], []
            for b in range(dataset.n):
                rows = ideals[name][b].any(-1)  # the query rows this detector scores
                head = pattern[b, row.layer, row.head][rows].double()
                on.append(float((head * ideals[name][b][rows]).sum()))
                total.append(float(head.sum()))
            theirs = stats.bootstrap(
                (np.array(on), np.array(total)),
                lambda a, m, axis=-1: a.sum(axis) / m.sum(axis),
                paired=True,
                n_resamples=1000,
                method="percentile",
                rng=np.random.default_rng(0),
            ).confidence_interval
            ours = (getattr(row, f"{name}_ci_low"), getattr(row, f"{name}_ci_high"))
            assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-5)
            assert ours[0] - 1e-6 <= getattr(row, name) <= ours[1] + 1e-6
