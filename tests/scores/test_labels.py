"""Head labels from hand-built score tables: each rule, its boundary and its printed threshold."""

from __future__ import annotations

import pandas as pd

from headscope.scores.labels import LabelThresholds, contrast_group, label_heads
from headscope.tasks.registry import get_task


def _ov(rows):
    return pd.DataFrame(
        [
            {
                "layer": lay,
                "head": h,
                "relation": rel,
                "sign": sign,
                "k": 5,
                "embedding": "context",
                "score": s,
            }
            for lay, h, rel, sign, s in rows
        ]
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
    ]
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
    mover = table[table["label"] == "name mover"]["evidence"].iloc[0]
    assert mover == "copy 0.95 >= 0.90; attention end->IO 0.70 >= 0.25"
    successor = table[table["label"] == "successor"]["evidence"].iloc[0]
    assert successor == "next 0.90 >= 0.50; next > copy 0.60"


def test_thresholds_are_inclusive_and_successor_needs_next_above_copy():
    ov = _ov([(0, 0, "copy", 1, 0.5), (0, 0, "next", 1, 0.5), (0, 1, "copy", 1, 0.2), (0, 1, "next", 1, 0.5)])
    attention = _attention([(0, 0, "end", "IO", 0.3), (0, 1, "end", "IO", 0.29)])
    assert _labels(label_heads(ov, attention, pd.DataFrame(), "IO")) == {
        (0, 0, "name mover"),
        (0, 1, "successor"),
    }


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
        evidence["name mover"] == "copy 1.00 >= 0.50; attention end->IO 0.56 >= 0.30; end->IO > end->S 0.44"
    )
    assert evidence["copy suppression"] == (
        "negative copy 0.99 >= 0.50; attention end->S 1.00 >= 0.30; end->S > end->IO 0.00"
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
