"""The page's label section: each label with its lines of evidence and its support."""

from __future__ import annotations

import pandas as pd

from headscope.report.page import SUPPORT_NOTE, labels_view
from headscope.scores.labels import label_heads, with_support
from tests.scores.test_labels import ATTENTION, OV, _behaviour_tables


def test_the_label_table_shows_support_and_the_evidence_by_kind():
    labels = with_support(label_heads(OV, ATTENTION, pd.DataFrame(), "IO"), _behaviour_tables())
    view = labels_view("Labelled heads", labels, "Thresholds: copy 0.5")
    evidence = ["weights", "attention", "behaviour"]
    assert view.columns == ["head", "label", "support", *evidence, "n", "p_adjusted", "ci_low", "ci_high"]
    rows = {row[1]: row for row in view.rows}
    assert rows["successor"][0] == "1.1" and rows["successor"][2] == "weights only"
    assert rows["successor"][5].startswith("contradicts: ")
    assert rows["name mover"][2] == "weights+attention+behaviour"
    assert view.note == f"{SUPPORT_NOTE} Thresholds: copy 0.5"


def test_a_run_saved_before_support_shows_its_columns():
    old = pd.DataFrame({"layer": [2], "head": [1], "label": ["successor"], "evidence": ["next 0.90 >= 0.50"]})
    view = labels_view("Labelled heads", old, "")
    assert view.columns == ["layer", "head", "label", "evidence"]
