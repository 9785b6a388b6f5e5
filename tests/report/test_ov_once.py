"""The report's OV kernel once: every task's OV tables and the atlas from one pass, the same tables."""

from __future__ import annotations

import pandas.testing as pdt

from headscope.models.loading import load_model
from headscope.report.compute import ReportOptions, _build_run
from headscope.report.ov_once import ov_once
from headscope.tasks.registry import get_task

TASKS = ("ioi", "seq-digits")
OV_TABLES = ("ov_scores", "ov_per_token", "ov_categories", "ov_keywords", "atlas", "atlas_cards")


def test_one_pass_serves_every_task_and_the_atlas_with_the_same_tables():
    model = load_model("organism")
    tasks = [get_task(name) for name in TASKS]
    options = ReportOptions(tasks=TASKS, n=16, n_boot=50, knockout_n=0, circuit_n=0, example_prompts=2)
    said: list[str] = []
    with ov_once(model, tasks, options, said.append) as shared:
        together = _build_run(model, tasks, options, lambda message: None)
    assert shared.passes == 1 and shared.served == len(TASKS) + 1  # each task's OV step and the atlas
    assert any("one pass over the vocabulary for 3 score sets" in line for line in said)
    alone = _build_run(model, tasks, options, lambda message: None)  # each call its own pass
    # two computations of the same ranks; the organism's 204 logits per row have no float ties
    # between distinct values, so its tables are the same to the bit (as the baseline's CSVs are)
    for name in OV_TABLES:
        pdt.assert_frame_equal(together.table(name), alone.table(name), check_exact=True, obj=name)
