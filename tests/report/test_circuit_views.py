"""The page's "Circuits per task": each circuit's stability with Méloux et al.'s 0.8 line named, and
runs written before stability (or merged with one) shown without an invented value."""

from __future__ import annotations

import math

import pandas as pd

from headscope.report.circuit_views import circuits_view, stability_sentence
from headscope.run import Run


def _summary(task: str, stability: float | None, stable: bool | None) -> dict:
    row = {
        "task": task,
        "circuit_edges": 17,
        "nodes": "0.0,1.1",
        "faithfulness": 96.0,
        "normalized": 0.95,
        "method": "eap-ig",
        "spearman": 0.9,
        "n": 32,
    }
    if stability is not None:
        row |= {"stability": stability, "stability_low": stability - 0.1, "stability_resamples": 200}
        row |= {"stable": stable}
    return row


def _run(rows: list[dict]) -> Run:
    return Run({"circuit": pd.DataFrame(rows)}, {"tasks": [r["task"] for r in rows]}, {}, 0)


def test_each_circuit_shows_its_stability_and_the_verdict_at_08():
    view = circuits_view(_run([_summary("ioi", 0.94, True), _summary("induction", 0.78, False)]))
    assert {"stability", "stability 5th pct", "resamples", "stable?"} <= set(view.columns)
    verdicts = [row[view.columns.index("stable?")] for row in view.rows]
    assert verdicts == ["stable (Méloux et al. 0.8)", "unstable: below Méloux et al.'s 0.8"]
    assert "Méloux et al. 2025" in view.note and "5th percentile" in view.note


def test_a_run_from_before_stability_shows_none_and_a_merged_one_says_not_measured():
    old = circuits_view(_run([_summary("ioi", None, None)]))
    assert "stability" not in old.columns and "Méloux" not in old.note
    merged = _run([_summary("ioi", 0.94, True), _summary("recency", None, None)])
    merged.tables["circuit"].loc[1, "stable"] = math.nan  # what concatenating the two runs leaves
    view = circuits_view(merged)
    assert view.rows[1][view.columns.index("stable?")] == "not measured"


def test_the_circuits_note_states_its_stability_in_one_sentence():
    row = pd.Series(_summary("ioi", 0.94, True))
    said = stability_sentence(row)
    assert "mean Jaccard 0.94" in said and "200 bootstrap resamples" in said and "0.84" in said
    assert said.endswith("stable (Méloux et al. 0.8).")
    assert stability_sentence(pd.Series(_summary("ioi", None, None))) == ""
