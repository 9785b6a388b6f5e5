"""The run's false discovery rate: Benjamini–Hochberg over every test of a run at once, on hand-made
tables (two tasks' OV scores and an atlas), against a hand-written adjustment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headscope.analyses.fdr import every_p, run_fdr
from headscope.scores.atlas import with_tests
from headscope.scores.labels import label_heads
from tests.scores.test_labels import _bh, _ov


def _task_ov(task: str, within_hits: int, n: int):
    rows = [(0, h, rel, 1, 0.0) for h in range(2) for rel in ("copy", "next")]
    within = {
        (0, 0, "next", 1): within_hits,
        (0, 1, "next", 1): 0,
        (0, 0, "copy", 1): 0,
        (0, 1, "copy", 1): 0,
    }
    return _ov(rows, n=n, within=within).assign(task=task)


def _atlas(rows: int, hits: int) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "layer": 0, "head": list(range(rows)), "relation": "number_next", "group": "algorithmic",
            "sign": 1, "score": 0.0, "within": [hits / 10] + [0.0] * (rows - 1), "chance": 0.1, "n": 10,
            "dropped": 0, "within_hits": [hits] + [0] * (rows - 1),
        }
    )  # fmt: skip
    return with_tests(table)


def _run(atlas_rows: int):
    ov = pd.concat([_task_ov("a", 6, 10), _task_ov("b", 10, 10)], ignore_index=True)
    labels = pd.concat(
        [label_heads(ov[ov.task == t], pd.DataFrame(), pd.DataFrame(), None).assign(task=t) for t in "ab"],
        ignore_index=True,
    )
    atlas = _atlas(atlas_rows, 10)
    return {"ov_scores": ov, "labels": labels, "atlas": atlas, "atlas_cards": pd.DataFrame()}


def test_every_test_of_the_run_is_adjusted_together():
    tables = _run(atlas_rows=3)
    # Each task's step: 6 of 10 against 1/10 (p = 1.5e-4) is significant over its own 8 tests.
    assert sorted(tables["labels"]["task"]) == ["a", "b"]
    raw = every_p(tables)
    assert len(raw) == 2 * 8 + 3  # 2 tasks x 2 heads x 2 relations x (top-k, within-set), the atlas
    done = run_fdr(tables)
    expected = _bh(list(raw))
    within_a = stats.binomtest(6, 10, 0.1, alternative="greater").pvalue
    label_a = done["labels"][done["labels"].task == "a"].iloc[0]
    assert label_a.p == pytest.approx(within_a)
    assert label_a.p_adjusted == pytest.approx(expected[int(np.argmin(np.abs(raw - within_a)))])
    assert done["atlas"]["p_adjusted"].tolist() == pytest.approx(expected[-3:])
    assert done["atlas_cards"]["kind"].tolist()[0] == "maps"


def test_a_label_significant_in_its_task_but_not_over_the_run_is_left_out():
    # 6 of 10 (p = 1.5e-4), 4th smallest of the run: x 8 / 4 in its task, x 2016 / 4 = 0.074 over the run.
    done = run_fdr(_run(atlas_rows=2000))
    assert done["labels"]["task"].tolist() == ["b"]
    assert (done["labels"]["p_adjusted"] < 0.05).all()
