"""Runs of one model on different tasks merge into the run of the union; anything else is refused."""

from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd
import pytest

from headscope.report.html import render_page
from headscope.report.merge import MergeError, merge_runs
from headscope.report.page import build_page
from headscope.run import Run, load_run
from headscope.tasks.registry import get_task
from tests.report.conftest import make_run

PARTS = (("ioi",), ("seq-digits", "induction"))


def _saved(run: Run, folder) -> Run:
    run.save(folder)
    return load_run(folder)


@pytest.fixture(scope="module")
def runs(report_model, tmp_path_factory) -> dict[str, Run]:
    """Each part on its own, and one run on every task of the parts, as results.json holds them."""
    folder = tmp_path_factory.mktemp("merge")
    found = {}
    for tasks in [*PARTS, tuple(t for part in PARTS for t in part)]:
        name = "+".join(tasks)
        found[name] = _saved(make_run(report_model, [get_task(t) for t in tasks], n=8), folder / name)
    return found


def test_merged_runs_equal_one_run_on_the_union_of_their_tasks(runs):
    parts = [runs["+".join(part)] for part in PARTS]
    whole = runs["ioi+seq-digits+induction"]
    merged = merge_runs(parts)
    assert merged.tasks == whole.tasks
    assert set(merged.tables) == set(whole.tables)
    for name, table in whole.tables.items():
        pd.testing.assert_frame_equal(merged.table(name), table, obj=name)
    assert not merged.table("comparison").empty
    assert set(merged.table("comparison")["n_tasks"]) > {1}  # heads that matter across the two runs
    assert {k: v for k, v in merged.options.items() if k != "merged_from"} == whole.options
    assert merged.options["merged_from"] == [
        {"content_sha256": run.content_sha256(), "tasks": list(run.tasks)} for run in parts
    ]
    assert merged.model == whole.model and merged.seed == whole.seed
    merged_html = render_page(build_page(replace(merged, created=whole.created)))
    whole_html = render_page(build_page(whole))
    provenance = re.compile(r'<section id="provenance">.*?</section>', re.DOTALL)  # merged_from is there
    assert "merged_from" in provenance.search(merged_html).group(0)
    assert provenance.sub("", merged_html) == provenance.sub("", whole_html)


def _refusal(parts: list[Run]) -> str:
    with pytest.raises(MergeError) as caught:
        merge_runs(parts, ["A", "B"])
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_other_models_options_or_versions_are_refused_naming_the_difference(runs):
    a, b = runs["ioi"], runs["seq-digits+induction"]
    other_weights = replace(b, model=b.model | {"weights_sha256": "0" * 64})
    assert "model weights_sha256 differs" in _refusal([a, other_weights])
    assert "model n_heads differs (4 vs 8)" in _refusal([a, replace(b, model=b.model | {"n_heads": 8})])
    assert "model dtype differs ('float32' vs 'bfloat16')" in _refusal(
        [a, replace(b, model=b.model | {"dtype": "bfloat16"})]
    )
    assert "seed differs (0 vs 1)" in _refusal([a, replace(b, seed=1)])
    assert "option k differs (5 vs 3)" in _refusal([a, replace(b, options=b.options | {"k": 3})])
    assert "option n differs (8 vs 200)" in _refusal([a, replace(b, options=b.options | {"n": 200})])
    message = _refusal([a, replace(b, versions=b.versions | {"torch": "0.1"})])
    assert message.startswith("cannot merge B into A: torch version differs (") and "'0.1'" in message
    merged = merge_runs([a, replace(b, versions=b.versions | {"python": "3.0.0"})])  # no number moves
    assert merged.tasks == ("ioi", "seq-digits", "induction")


def test_the_same_task_in_two_runs_is_refused(runs):
    a, b = runs["ioi"], runs["ioi+seq-digits+induction"]
    assert _refusal([a, b]) == (
        "task 'ioi' is in both A and B; merge runs of different tasks (leave one of the two folders out)"
    )
    with pytest.raises(MergeError, match="at least two runs"):
        merge_runs([a])
