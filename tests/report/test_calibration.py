"""Calibration: a budgeted report's 95% intervals hold the exhaustive report's values.

The budgeted run takes the first prompts of the same seeded stream (fewer prompts per task and
for the knockouts); for every per-head cell of each table with intervals (OV scores, DLA,
knockout effects, role attention), the exhaustive run's value should lie inside the budgeted run's
interval for at least 93% of the cells. On the organism the budgeted run must also name the same
labels and the same top heads per task."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from headscope.models.loading import load_model
from headscope.report import budget, plan
from headscope.report.compute import ReportOptions

RATE = 5e10  # FLOP/s: fixed, so the sizes the budget picks do not depend on this machine
TABLES = {  # table: (key columns, value column)
    "ov_scores": (["task", "layer", "head", "relation", "sign"], "score"),
    "dla": (["task", "component"], "dla"),
    "knockout": (["task", "component"], "effect"),
    "role_attention": (["task", "layer", "head", "query_role", "key_role"], "attention"),
}
QUIET = dict(say=lambda message: None)
PINNED = dict(rate=RATE, workers=1)  # the sizes depend on neither this machine's speed nor its load
ORGANISM_TASKS = ["ioi", "recency", "seq-digits", "seq-numwords", "seq-months", "seq-days", "induction"]


def _runs(model, tasks: list[str], n: int):
    """The exhaustive run (`n` prompts, 32 for knockouts) and the run the plan fits to a budget: the
    predicted time of the ladder's 100 prompts and 16 knockout prompts, which it must then choose."""
    asked = ReportOptions(tasks=(), n=n, knockout_n=32, circuit_n=0, n_boot=50, example_prompts=2)
    full = plan.plan_report(model, tasks, asked, **PINNED, **QUIET)
    smaller = replace(asked, n=100, knockout_n=16, ov_detail_n=budget.OV_DETAIL_PROMPTS)  # as budgeted
    floor = plan.plan_report(model, tasks, smaller, **PINNED, **QUIET)
    small = plan.plan_report(model, tasks, asked, floor.seconds + 1e-6, **PINNED, **QUIET)
    assert (small.options.n, small.options.knockout_n) == (100, 16)  # fewer of each, as budgeted
    return plan.run_plan(full, **QUIET), plan.run_plan(small, **QUIET), small.options


def coverage(full, small, table: str) -> tuple[float, int]:
    """The share of cells whose exhaustive value lies in the budgeted interval, and the cells."""
    keys, value = TABLES[table]
    left = full.table(table)[[*keys, value]]
    right = small.table(table)[[*keys, "ci_low", "ci_high"]]
    cells = left.merge(right, on=keys).dropna(subset=["ci_low", "ci_high"])
    slack = 1e-6 * (1 + cells[value].abs())  # float32 values against float64 bounds
    inside = (cells[value] >= cells["ci_low"] - slack) & (cells[value] <= cells["ci_high"] + slack)
    return float(inside.mean()), len(cells)


@pytest.fixture(scope="module")
def organism_runs():
    return _runs(load_model("organism"), ORGANISM_TASKS, 200)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_the_organisms_budgeted_intervals_hold_the_exhaustive_values(organism_runs, table):
    full, small, _ = organism_runs
    share, cells = coverage(full, small, table)
    assert cells > 0 and share >= 0.93, f"{table}: {share:.3f} of {cells} cells"


def test_the_organisms_budgeted_run_names_the_same_labels_and_top_heads(organism_runs):
    full, small, _ = organism_runs
    for table, keys in (
        ("labels", ["task", "layer", "head", "label"]),
        ("top_heads", ["task", "layer", "head"]),
    ):
        same = pd.merge(full.table(table)[keys], small.table(table)[keys], how="outer", indicator=True)
        assert (same["_merge"] == "both").all(), f"{table} differ:\n{same[same['_merge'] != 'both']}"


def test_a_model_with_effects_everywhere_is_calibrated_too(report_model):
    full, small, _ = _runs(report_model, ["ioi", "induction"], 200)  # random weights: no cell is 0
    for table in TABLES:
        share, cells = coverage(full, small, table)
        assert cells > 0 and share >= 0.93, f"{table}: {share:.3f} of {cells} cells"
