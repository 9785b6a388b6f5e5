"""Head labels from hand-built score tables: each rule, its boundary and its printed threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headscope.scores import significance
from headscope.scores.labels import (
    RULES,
    LabelThresholds,
    contrast_group,
    label_heads,
    threshold_failures,
    with_support,
)
from headscope.tasks.registry import get_task


def _ov(rows, n: int = 100, chance: float = 0.01, within: dict | None = None):
    """An OV score table: score = hits / n against `chance`; `within`: (layer, head, relation, sign)
    -> within-set hits of n against chance 1/10 (the within-set columns of the ordered relations)."""
    table = pd.DataFrame(
        [
            {
                "layer": lay,
                "head": h,
                "relation": rel,
                "sign": sign,
                "k": 5,
                "embedding": "context",
                "score": s,
                "hits": round(s * n),
                "n": n,
                "chance": chance,
            }
            for lay, h, rel, sign, s in rows
        ]
    )
    if within is None:
        return table
    found = [within.get((r.layer, r.head, r.relation, r.sign)) for r in table.itertuples(index=False)]
    return table.assign(
        within=[np.nan if w is None else w / n for w in found],
        within_hits=[np.nan if w is None else w for w in found],
        within_n=[np.nan if w is None else n for w in found],
        within_chance=[np.nan if w is None else 0.1 for w in found],
    )


def _attention(rows):
    return pd.DataFrame(
        [
            {"layer": lay, "head": h, "query_role": q, "key_role": k, "attention": a}
            for lay, h, q, k, a in rows
        ]
    )


OV = _ov(
    [
        (0, 0, "copy", 1, 0.95),
        (0, 0, "copy", -1, 0.0),
        (0, 0, "next", 1, 0.1),
        (0, 0, "next", -1, 0.0),
        (0, 1, "copy", 1, 0.95),
        (0, 1, "copy", -1, 0.0),
        (0, 1, "next", 1, 0.1),
        (0, 1, "next", -1, 0.0),
        (1, 0, "copy", 1, 0.1),
        (1, 0, "copy", -1, 0.9),
        (1, 0, "next", 1, 0.0),
        (1, 0, "next", -1, 0.0),
        (1, 1, "copy", 1, 0.6),
        (1, 1, "copy", -1, 0.0),
        (1, 1, "next", 1, 0.9),
        (1, 1, "next", -1, 0.0),
    ],
    within={(1, 1, "next", 1): 90, (0, 1, "next", 1): 10, (1, 0, "next", 1): 12},
)
ATTENTION = _attention(
    [
        (0, 0, "end", "IO", 0.7),
        (0, 1, "end", "IO", 0.1),
        (1, 0, "end", "IO", 0.5),
        (1, 1, "end", "IO", 0.0),
        (0, 1, "end", "S", 0.9),
        (0, 1, "S2", "IO", 0.9),
    ]
)


def _labels(table):
    return {(int(r.layer), int(r.head), r.label) for r in table.itertuples(index=False)}


def test_each_rule_finds_exactly_its_heads():
    table = label_heads(OV, ATTENTION, pd.DataFrame(), "IO")
    # 0.1 copies but attends to S, not to the answer role: no name mover.
    assert _labels(table) == {(0, 0, "name mover"), (1, 0, "negative name mover"), (1, 1, "successor")}


def test_evidence_prints_scores_and_thresholds():
    table = label_heads(OV, ATTENTION, pd.DataFrame(), "IO", LabelThresholds(copy=0.9, answer_attention=0.25))
    mover = table[table["label"] == "name mover"].iloc[0]
    assert mover["weights"] == "copy 0.95 >= 0.90 (chance 0.01)"
    assert mover["attention"] == "attention end->IO 0.70 >= 0.25"
    assert mover["evidence"] == f"{mover['weights']}; {mover['attention']}"
    assert (mover["support"], mover["behaviour"]) == ("weights+attention", "not measured")
    successor = table[table["label"] == "successor"].iloc[0]
    beside = "top-k next 0.90 >= 0.50 (beside)"  # shown, not required
    assert successor["weights"] == f"within-set next 0.90 >= 0.50 (chance 0.10); {beside}"
    assert (successor["support"], successor["attention"]) == ("weights only", "")
    # The label's statistic is its within-set share: 90 of 100 against 1/10, with its interval.
    assert successor["n"] == 100 and successor["p"] == pytest.approx(stats.binomtest(90, 100, 0.1).pvalue)


def test_thresholds_are_inclusive_and_successor_reads_the_within_set_score():
    rows = [(0, 0, "copy", 1, 0.5), (0, 0, "next", 1, 0.5), (0, 1, "copy", 1, 0.2), (0, 1, "next", 1, 0.2)]
    rows += [(0, 2, "copy", 1, 0.2), (0, 2, "next", 1, 1.0)]
    # 0.1: the successor first among the set half the time (top-k next only 0.2); 0.2 fills its
    # top-k with the set (next 1.00) yet ranks the successor first no more often than chance.
    ov = _ov(rows, within={(0, 1, "next", 1): 50, (0, 2, "next", 1): 11, (0, 0, "next", 1): 49})
    attention = _attention([(0, 0, "end", "IO", 0.3), (0, 1, "end", "IO", 0.29)])
    assert _labels(label_heads(ov, attention, pd.DataFrame(), "IO")) == {
        (0, 0, "name mover"),
        (0, 1, "successor"),
    }


def test_a_share_over_few_items_passes_the_threshold_but_not_the_fdr_test():
    # 2 of 3 against 1/10: p = 0.028 alone, 0.028 x 8 tests / rank 1 = 0.22 after BH over the table.
    rows = [(0, h, rel, 1, 0.0) for h in range(2) for rel in ("copy", "next")]
    within = {(0, 0, "next", 1): 2, (0, 1, "next", 1): 0, (0, 0, "copy", 1): 0, (0, 1, "copy", 1): 0}
    ov = _ov(rows, n=3, within=within)
    assert label_heads(ov, pd.DataFrame(), pd.DataFrame(), None).empty
    failed = threshold_failures(ov, pd.DataFrame(), pd.DataFrame(), None)
    assert failed[["layer", "head", "label"]].values.tolist() == [[0, 0, "successor"]]
    loose = label_heads(ov, pd.DataFrame(), pd.DataFrame(), None, tested=False).iloc[0]
    assert loose["p"] == pytest.approx(stats.binomtest(2, 3, 0.1, alternative="greater").pvalue)
    assert loose["p_adjusted"] == pytest.approx(loose["p"] * 8)  # the smallest of 8 p-values


def test_every_rule_is_a_row_with_a_named_threshold():
    fields = set(LabelThresholds.__dataclass_fields__)
    assert all(r.threshold in fields for r in RULES if r.threshold is not None)
    assert all(r.other is not None for r in RULES if r.threshold is None)
    assert all(r.kind == "weights" for r in RULES if r.chance is not None)  # counts: the OV shares
    for label in {r.label for r in RULES}:
        kinds = {r.kind for r in RULES if r.label == label}
        assert "behaviour" in kinds and kinds - {"behaviour"}, label


def test_detector_labels_and_no_answer_role():
    detectors = pd.DataFrame(
        {
            "layer": [0, 1],
            "head": [0, 1],
            "previous_token": [0.9, 0.0],
            "duplicate_token": [0.0, 0.4],
            "induction": [0.1, 0.8],
        }
    )
    table = label_heads(pd.DataFrame(), pd.DataFrame(), detectors, None)
    assert _labels(table) == {(0, 0, "previous-token"), (1, 1, "duplicate-token"), (1, 1, "induction")}
    assert label_heads(OV, ATTENTION, pd.DataFrame(), None)["label"].tolist() == ["successor"]


def test_name_mover_must_attend_to_the_answer_more_than_to_the_contrast():
    # The organism's ioi heads: 1.0 attends IO 0.56 / S 0.44, 1.1 IO 0.46 / S 0.54, both copy 1.00;
    # 3.0 attends S 1.00 and writes against it (negative copy 0.99).
    ov = _ov(
        [(1, 0, "copy", 1, 1.0), (1, 1, "copy", 1, 1.0), (3, 0, "copy", 1, 0.0), (3, 0, "copy", -1, 0.99)]
    )
    attention = _attention(
        [
            (1, 0, "end", "IO", 0.56),
            (1, 0, "end", "S", 0.44),
            (1, 1, "end", "IO", 0.46),
            (1, 1, "end", "S", 0.54),
            (3, 0, "end", "IO", 0.0),
            (3, 0, "end", "S", 1.0),
        ]
    )
    table = label_heads(ov, attention, pd.DataFrame(), "IO", contrast_role="S")
    assert _labels(table) == {(1, 0, "name mover"), (3, 0, "copy suppression")}
    evidence = dict(zip(table["label"], table["evidence"], strict=True))
    assert (
        evidence["name mover"] == "copy 1.00 >= 0.50 (chance 0.01); attention end->IO 0.56 >= 0.30; "
        "end->IO > end->S 0.44"
    )
    assert evidence["copy suppression"] == (
        "negative copy 0.99 >= 0.50 (chance 0.01); attention end->S 1.00 >= 0.30; end->S > end->IO 0.00"
    )
    # Without a contrast role the comparison is not made (and says so by its absence).
    assert _labels(label_heads(ov, attention, pd.DataFrame(), "IO")) == {
        (1, 0, "name mover"),
        (1, 1, "name mover"),
    }


def test_negative_name_mover_attends_to_the_answer_and_writes_against_it():
    ov = _ov([(2, 0, "copy", -1, 0.98), (2, 1, "copy", -1, 0.98)])
    attention = _attention(
        [
            (2, 0, "end", "IO", 0.6),
            (2, 0, "end", "S", 0.1),
            (2, 1, "end", "IO", 0.35),
            (2, 1, "end", "S", 0.4),
        ]
    )
    table = label_heads(ov, attention, pd.DataFrame(), "IO", contrast_role="S")
    assert _labels(table) == {(2, 0, "negative name mover"), (2, 1, "copy suppression")}


def test_contrast_group_is_the_group_holding_the_contrast():
    assert contrast_group(get_task("ioi")) == "S"
    assert contrast_group(get_task("recency")) == "S_r2"
    assert contrast_group(get_task("induction")) is None


# ---- significance: against scipy.stats.binomtest and a hand-written Benjamini–Hochberg -----------


def _bh(p: list[float]) -> list[float]:
    """Benjamini–Hochberg by hand: p_(i) m / i, then the running minimum from the largest down."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 1.0
    for rank in range(len(p), 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * len(p) / rank)
        out[i] = running
    return out


def test_binomial_p_and_wilson_interval_match_binomtest():
    cases = [(7, 7, 1 / 7), (3, 7, 1 / 7), (6, 10, 0.1), (0, 5, 0.2), (40, 800, 0.05)]
    hits, n, chance = zip(*cases, strict=True)
    p = significance.binomial_p(hits, n, chance)
    low, high = significance.wilson(hits, n)
    for i, (k, m, c) in enumerate(cases):
        test = stats.binomtest(k, m, c, alternative="greater")
        interval = stats.binomtest(k, m, c).proportion_ci(method="wilson")
        assert p[i] == pytest.approx(test.pvalue, rel=1e-9)
        assert (low[i], high[i]) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert p[0] == pytest.approx(1.2e-6, rel=0.05) and p[1] == pytest.approx(0.065, abs=1e-3)  # the doc's
    assert np.isnan(significance.binomial_p([1], [0], [0.5])[0])


def test_adjusted_p_values_are_benjamini_hochberg_over_every_test_together():
    p = [0.001, 0.04, 0.03, 0.5, 0.2, np.nan]
    assert significance.adjusted(p)[:5] == pytest.approx(_bh(p[:5]))
    assert np.isnan(significance.adjusted(p)[5])
    tables = {"a": pd.DataFrame({"p": p[:2]}), "b": pd.DataFrame({"p": p[2:5], "q": [1.0, 1.0, 1.0]})}
    pooled = significance.adjust_together(tables, {"a": ("p",), "b": ("p",)})
    assert list(pooled["a"]["p_adjusted"]) + list(pooled["b"]["p_adjusted"]) == pytest.approx(_bh(p[:5]))


# ---- behaviour: `with_support` on hand-made knockout, DLA and edge tables ------------------------


def _behaviour_tables():
    knockout = pd.DataFrame(
        {
            "component": ["0.0", "0.1", "1.1", "mlp0"],
            "layer": [0, 0, 1, 0],
            "head": [0, 1, 1, np.nan],
            "method": "mean",
            "metric": "logit_diff",
            "pct_of_clean": [40.0, 98.0, 99.0, 10.0],
            "exact": True,
        }
    )
    dla = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "dla": [4.0, -0.2, -2.0, 0.1]})
    edges = pd.DataFrame(
        {
            "source": ["0.0", "embed", "0.1"],
            "target": ["logits", "1.1", "1.0"],
            "input": ["", "q", "v"],
            "score": [2.0, 0.1, 1.0],
            "exact": [2.0, np.nan, 0.9],
        }
    )
    return {"knockout": knockout, "dla": dla, "edges": edges}


def test_with_support_adds_behaviour_and_shows_a_contradicted_label_as_weights_only():
    labels = label_heads(OV, ATTENTION, pd.DataFrame(), "IO")  # 0.0 name mover, 1.0 negative, 1.1 successor
    supported = with_support(labels, _behaviour_tables())
    rows = {r.label: r for r in supported.itertuples(index=False)}
    # 0.0: knockout leaves 40% (effect 0.60), DLA its task's largest, edge 2.0 the largest.
    assert rows["name mover"].support == "weights+attention+behaviour"
    assert rows["name mover"].behaviour == (
        "agrees: knockout effect 0.60 >= 0.10; |DLA| / largest 1.00 >= 0.20; |edge| / largest 1.00 >= 0.20"
    )
    # 1.0: no knockout row; |DLA| 2.0 of 4.0 (0.50), its edge 0.9 exact of 2.0 (0.45): agrees.
    assert rows["negative name mover"].support == "weights+attention+behaviour"
    assert "knockout" not in rows["negative name mover"].behaviour
    # 1.1: knocked out 99% left (0.01), |DLA| 0.025, edge 0.1 / 2.0 = 0.05: every value below.
    assert rows["successor"].support == "weights only"
    assert rows["successor"].behaviour.startswith("contradicts: knockout effect 0.01 < 0.10")
    assert rows["successor"].evidence.endswith(rows["successor"].behaviour)
    assert list(supported.columns) == list(labels.columns)
    assert (supported.drop(columns=["support", "behaviour", "evidence"]).equals(
        labels.drop(columns=["support", "behaviour", "evidence"])
    ))  # fmt: skip


def test_with_support_without_behaviour_tables_says_not_measured_and_thresholds_are_named():
    labels = label_heads(OV, ATTENTION, pd.DataFrame(), "IO")
    assert with_support(labels, {}).equals(labels)
    strict = with_support(labels, _behaviour_tables(), LabelThresholds(knockout=0.7, dla=1.1, edge=1.1))
    assert set(strict["support"]) == {"weights+attention", "weights only"}
    detectors = pd.DataFrame({"layer": [1], "head": [1], "previous_token": [0.9]})
    found = with_support(label_heads(pd.DataFrame(), pd.DataFrame(), detectors, None), _behaviour_tables())
    # a previous-token head reads no DLA (it acts through other heads): knockout and edges only
    assert found["support"].tolist() == ["attention only"] and "DLA" not in found["behaviour"].iloc[0]


def test_a_beside_row_adds_its_kind_to_support_only_where_it_holds():
    # Two successors (within-set next 90 of 100); 0.0 reads x4 (the sequence tasks' contrast role)
    # 0.80, 0.1 only 0.10: its failing attention row is shown but its kind does not agree.
    within = {(0, 0, "next", 1): 90, (0, 1, "next", 1): 90}
    ov = _ov([(0, h, "next", 1, 0.9) for h in range(2)], within=within)
    attention = _attention([(0, 0, "end", "x4", 0.8), (0, 1, "end", "x4", 0.1)])
    table = label_heads(ov, attention, pd.DataFrame(), None, contrast_role="x4")
    rows = table.set_index("head")
    assert rows.loc[0, "attention"] == "attention end->x4 0.80 >= 0.30 (beside)"
    assert rows.loc[1, "attention"] == "attention end->x4 0.10 < 0.30 (beside)"
    assert table["support"].tolist() == ["weights+attention", "weights only"]
    assert rows.loc[1, "evidence"].endswith(rows.loc[1, "attention"])
    # behaviour agrees for both (0.0: knockout 0.60; 0.1: its edge 0.9 of 2.0); 0.1's attention still not
    supported = with_support(table, _behaviour_tables())
    assert supported["support"].tolist() == ["weights+attention+behaviour", "weights+behaviour"]
    # without a contrast role the beside row has no value: not shown, not counted
    alone = label_heads(ov, attention, pd.DataFrame(), None)
    assert alone["attention"].tolist() == ["", ""] and set(alone["support"]) == {"weights only"}
