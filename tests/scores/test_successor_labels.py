"""Succession as Gould et al. define it (docs/methods.md §7) on a hand-built model of the real
seq-digits task (tests/scores/successor_model.py): a successor head 1.0 beside a digit-category head
1.1. The report's task step names 1.0 `successor` with all three kinds of evidence and labels
nothing else; 1.1's top-k next is as high as 1.0's, and only the within-set score tells them apart.
Every number is the one the construction gives (see the model's docstring)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from headscope.analyses.fdr import run_fdr
from headscope.models.loading import load_model
from headscope.report.compute import ReportOptions, analyse_task
from headscope.scores.labels import LabelThresholds, head_scores, threshold_failures
from headscope.tasks.dataset import build_dataset
from tests.scores.successor_model import (
    CATEGORY,
    END,
    SUCCESSOR,
    SUCCESSOR_WEIGHT,
    X4,
    digits_task,
    save_successor_model,
)

ALL = "weights+attention+behaviour"
ATTENTION = math.exp(12) / (math.exp(12) + math.exp(4) + 22)  # end -> x4: 12; BOS: 4; 22 others: 0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(str(save_successor_model(tmp_path_factory.mktemp("successor"))))


@pytest.fixture(scope="module")
def data(model):
    return build_dataset(digits_task(), model.tokens, 32, seed=0)


@pytest.fixture(scope="module")
def tables(model, data):
    options = ReportOptions(tasks=("seq-digits",), n=32, n_boot=20)
    return analyse_task(model, data, options, say=lambda message: None)


def _ov(tables, head, relation: str):
    ov = tables["ov_scores"].set_index(["layer", "head", "relation", "sign"])
    return ov.loc[(*head, relation, 1)]


def test_the_prompts_put_x4_and_end_where_the_heads_look(data):
    assert (data.roles["x4"].index == X4).all() and (data.roles["end"].index == END).all()


def test_the_successor_alone_is_named_with_all_three_kinds(tables):
    labels = tables["labels"]
    assert labels[["layer", "head", "label"]].values.tolist() == [[*SUCCESSOR, "successor"]]
    row = labels.iloc[0]
    assert row.support == ALL
    assert row.weights == ("within-set next 1.00 >= 0.50 (chance 0.05); top-k next 1.00 >= 0.50 (beside)")
    assert row.attention == "attention end->x4 1.00 >= 0.30 (beside)"  # C: the task's contrast role
    assert row.behaviour.startswith("agrees: knockout effect 1.0")
    assert row.n == 128 and row.p_adjusted < 1e-100  # 128 of 128 keyword instances against 1/20
    kept = run_fdr({"labels": labels.assign(task="seq-digits"), "ov_scores": tables["ov_scores"]})["labels"]
    assert len(kept) == 1


def test_top_k_next_cannot_tell_the_category_head_from_the_successor(tables):
    successor, category = _ov(tables, SUCCESSOR, "next"), _ov(tables, CATEGORY, "next")
    # 1.0 writes d + 1 alone: first of the vocabulary and of the digits; copy 0 (d ties at 0).
    assert (successor.score, successor.within) == (1.0, 1.0)
    assert _ov(tables, SUCCESSOR, "copy").score == 0.0
    # 1.1 writes d 1.6, d +- 1 1.4, d +- 2 1.2, other digits 1.0: its top 5 holds d and d + 1 (copy
    # and top-k next 1.00, above the `next` bar), but d is always first among the digits.
    assert category.score == 1.0 >= LabelThresholds().next and _ov(tables, CATEGORY, "copy").score == 1.0
    assert category.within == 0.0 and category.within_chance == pytest.approx(1 / 20)
    args = (tables["ov_scores"], tables["role_attention"], pd.DataFrame(), None)  # no detectors on seq-*
    tested = head_scores(*args, "x4").set_index(["layer", "head"]).loc[CATEGORY]
    assert tested.next_within_p == 1.0  # no better than chance: 0 of 128 against 1/20
    assert threshold_failures(*args, contrast_role="x4").empty  # nothing passes thresholds yet fails FDR


def test_both_heads_read_x4_and_only_the_successor_moves_the_metric(tables):
    attention = tables["role_attention"]
    reads = attention[(attention["query_role"] == "end") & (attention["key_role"] == "x4")]
    assert reads.set_index(["layer", "head"]).loc[[SUCCESSOR, CATEGORY], "attention"].tolist() == (
        pytest.approx([ATTENTION, ATTENTION], rel=1e-5)
    )
    dla = tables["dla"].dropna(subset=["head"]).set_index(["layer", "head"])["dla"]
    assert dla.loc[SUCCESSOR] == pytest.approx(SUCCESSOR_WEIGHT * ATTENTION, rel=1e-5)
    assert dla.loc[CATEGORY] == pytest.approx((1.4 - 1.6) * ATTENTION, rel=1e-4)
    knockout = tables["knockout"].dropna(subset=["head"]).set_index(["layer", "head"])
    clean = knockout.loc[(0, 0), "metric"]  # 0.0 writes nothing: knocked out, the clean metric
    assert clean == pytest.approx((SUCCESSOR_WEIGHT - 0.2) * ATTENTION, rel=1e-4)
    effect = (1 - knockout["pct_of_clean"] / 100).abs()
    # the twin's x4 is random: its mean writes every successor about equally, answer and contrast alike
    assert effect.loc[SUCCESSOR] == pytest.approx(1 + 0.2 / 3.8, abs=0.05)
    assert effect.loc[CATEGORY] == pytest.approx(0.2 / 3.8, abs=0.02) and effect.loc[CATEGORY] < 0.1
    assert effect.drop([SUCCESSOR, CATEGORY]).max() == 0.0  # every other head writes nothing
