"""The report's plan: tasks chosen once, datasets built once, one OV pass handed to every step
explicitly, sample sizes fitted to a budget and recorded, and the plan's phases."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pandas.testing as pdt
import pytest

import headscope as hs
from headscope.analyses.fdr import run_fdr
from headscope.models import memory
from headscope.models.loading import load_model
from headscope.report import budget, compute, phases, plan
from headscope.report.task_choice import RULE
from headscope.tasks.registry import get_task

TASKS = ("ioi", "seq-digits")
OV_TABLES = ("ov_scores", "ov_per_token", "ov_categories", "ov_keywords", "atlas", "atlas_cards")
RATE = 5e10  # FLOP/s: a fixed rate, so the sizes do not depend on this machine's speed
OV_DETAIL = "OV detail (per-token ranks, top-k tokens, categories)"
QUIET = dict(say=lambda message: None)
PINNED = dict(rate=RATE, workers=1)  # the sizes depend on neither this machine's speed nor its load


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


def _options(**more) -> compute.ReportOptions:
    base = dict(tasks=TASKS, n=16, n_boot=50, knockout_n=0, circuit_n=0, example_prompts=2)
    return compute.ReportOptions(**(base | more))


def test_the_one_ov_pass_gives_the_tables_each_step_computes_alone(organism):
    said: list[str] = []
    found = plan.plan_report(organism, list(TASKS), _options(), say=said.append, **PINNED)
    together = plan.run_plan(found, said.append)
    assert any("one pass over the vocabulary for 3 score sets" in line for line in said)
    alone = {}  # each task's OV step and the atlas with no pass handed to them: each its own
    for dataset in found.datasets:
        for name, table in compute.analyse_task(organism, dataset, found.options, **QUIET).items():
            alone.setdefault(name, []).append(table.assign(task=dataset.task.name))
    tables = {name: plan._task_first(pd.concat(parts, ignore_index=True)) for name, parts in alone.items()}
    tables = run_fdr(tables | plan._atlas(organism, found.options, None, lambda message: None))
    # two computations of the same ranks; the organism's 204 logits per row have no float ties
    # between distinct values, so its tables are the same to the bit (as the baseline's CSVs are)
    for name in OV_TABLES:
        expected, got = tables[name], together.table(name).reset_index(drop=True)
        pdt.assert_frame_equal(got, expected.reset_index(drop=True), check_exact=True, obj=name)


def test_the_plan_lists_every_phase_of_every_task_with_its_sample(organism):
    found = plan.plan_report(organism, list(TASKS), _options(knockout_n=8, circuit_n=4), **PINNED, **QUIET)
    table = found.table()
    every = {"capture", "OV tables", "DLA", "knockouts", "circuit", "cast", "scatter"}
    listed = {task: set(table[table["task"] == task]["phase"]) for task in TASKS}
    assert listed == {"ioi": every | {"QK"}, "seq-digits": every}  # no label of seq-digits reads a key
    units = table.set_index(["phase", "task"])["units"]
    assert units[("capture", "ioi")] == 16 and units[("circuit", "ioi")] == 4
    assert units[("knockouts", "ioi")] == organism.n_layers * (organism.n_heads + 1)  # every head and MLP
    assert units[("cast", "ioi")] == phases.CAST_MOVERS * found.options.top_heads  # movers x candidates
    qk = table.set_index(["phase", "task"]).loc[("QK", "ioi")]
    assert qk["units"] == found.options.top_heads and qk["unit"] == "heads"  # the most the step reads
    assert qk["gflop"] > 0 and qk["seconds"] > 0
    assert {"OV pass", "atlas", "page"} <= set(table[table["task"] == "(model)"]["phase"])
    assert found.seconds == pytest.approx(sum(p.seconds for p in found.phases))  # one process: the sum
    assert found.seconds == pytest.approx(table["seconds"].sum(), abs=0.05 * len(table))  # shown to 0.1 s
    assert all(data.n == 16 for data in found.datasets)


def test_a_budgeted_plan_prices_the_knockouts_at_the_cap_and_says_they_may_stop_earlier(organism):
    asked = _options(knockout_n=32)
    fixed = plan.plan_report(organism, ["ioi"], asked, **PINNED, **QUIET).table().set_index("phase")
    looked = plan.plan_report(organism, ["ioi"], asked, 1e6, **PINNED, **QUIET).table().set_index("phase")
    units = (fixed.loc["knockouts", "unit"], looked.loc["knockouts", "unit"])
    assert units == ("components", "prompts, up to")
    assert looked.loc["knockouts", "units"] == 16  # the cap: knockout_n, at most the task's prompts
    assert looked.loc["knockouts", "gflop"] == fixed.loc["knockouts", "gflop"]  # the same passes at the cap,
    assert looked.loc["knockouts", "seconds"] > fixed.loc["knockouts", "seconds"]  # in more, smaller batches
    assert compute.knockout_looks(compute.ReportOptions(tasks=(), budget=300.0), 24).sizes == (8, 16, 24)
    assert compute.knockout_looks(compute.ReportOptions(tasks=(), budget=300.0), 6).sizes == (6,)
    assert compute.knockout_looks(compute.ReportOptions(tasks=()), 32) is None  # no budget: a fixed count


def test_a_budget_shrinks_the_sizes_in_order_and_notes_what_it_leaves_out(organism):
    asked = _options(n=64, knockout_n=32, circuit_n=32)
    sizes = []
    for seconds in (1e6, 60, 20, 1e-3):
        found = plan.plan_report(organism, list(TASKS), asked, seconds, **PINNED, **QUIET)
        o = found.options
        sizes.append((o.n, o.knockout_n, o.circuit_n))
        assert o.budget == seconds
        if seconds >= 1e6:
            assert (o.n, o.knockout_n, o.circuit_n) == (64, 32, 32) and not o.budget_notes
        if found.seconds > seconds:  # nothing fits: the smallest plan, with both analyses noted
            assert (o.knockout_n, o.circuit_n, o.ov_detail_n) == (0, 0, 0)
            assert [a for a, _ in o.budget_notes] == ["QK attribution", "circuit", "knockouts", OV_DETAIL]
    for bigger, smaller in zip(sizes, sizes[1:], strict=False):  # a smaller budget never asks for more
        assert all(b >= s for b, s in zip(bigger, smaller, strict=True))
    same = plan.plan_report(organism, list(TASKS), asked, 20, **PINNED, **QUIET)
    assert same.options == plan.plan_report(organism, list(TASKS), asked, 20, **PINNED, **QUIET).options


def test_what_the_budget_leaves_out_is_a_not_computed_row_of_each_task(organism):
    found = plan.plan_report(organism, ["ioi"], _options(knockout_n=8, circuit_n=4), 1e-3, **PINNED, **QUIET)
    run = plan.run_plan(found, **QUIET)
    rows = run.table("not_computed")
    assert set(rows["analysis"]) == {"QK attribution", "circuit", "knockouts", OV_DETAIL}
    assert set(rows["task"]) == {"ioi"} and "budget of 0.001 s" in rows["why"].iloc[0]
    assert run.table("knockout").empty and run.options["budget"] == 0.001
    assert run.table("ov_per_token").empty and run.table("ov_categories").empty  # no row read whole
    assert not run.table("ov_scores").empty  # every row's hit is exact: the scores stay


def test_the_budget_leaves_out_the_qk_attribution_before_the_circuit_with_a_not_computed_row(organism):
    asked = _options(knockout_n=8)  # 16 prompts: under the prompt ladder's steps, QK's is the first
    full = plan.plan_report(organism, ["ioi"], asked, rate=RATE, **QUIET)
    qk = sum(p.seconds for p in full.phases if p.name == "QK")
    assert qk > 0 and full.options.qk_n is None  # the knockouts' prompts, by default
    found = plan.plan_report(organism, ["ioi"], asked, full.seconds - qk / 2, rate=RATE, **QUIET)
    assert found.options.qk_n == 0 and found.options.knockout_n == 8 and found.options.n == 16
    assert [a for a, _ in found.options.budget_notes] == ["QK attribution"]
    assert "QK" not in set(found.table()["phase"])
    run = plan.run_plan(found, **QUIET)
    rows = run.table("not_computed")
    assert list(rows["analysis"]) == ["QK attribution"] and "budget of" in rows["why"].iloc[0]
    assert run.table("qk_attribution").empty and not run.table("knockout").empty


def test_the_default_tasks_record_the_rule_the_run_used(organism):
    found = plan.plan_report(organism, None, compute.ReportOptions(tasks=(), n=8), **PINNED, **QUIET)
    assert found.options.task_rule == RULE
    assert "seq-letters" in dict(found.options.left_out)  # the organism never learnt it
    assert [data.task.name for data in found.datasets] == list(found.options.tasks)


def test_hs_report_returns_the_run_with_a_summary_and_writes_the_page(organism, tmp_path):
    run = hs.report(organism, ["ioi"], out=tmp_path / "r", budget=None, n=12, quiet=True)
    assert (tmp_path / "r" / "index.html").is_file()
    summary = run.summary()
    assert list(summary["task"]) == ["ioi"] and summary["n"].iloc[0] == 12
    assert "<table" in run._repr_html_()
    planned = hs.report(organism, ["ioi"], n=12, plan_only=True, quiet=True)
    assert isinstance(planned, plan.ReportPlan) and planned.options.budget == budget.DEFAULT_BUDGET


def test_hs_report_is_the_report_package_called_and_is_documented():
    import importlib
    import inspect

    assert hs.report is importlib.import_module("headscope.report") and "report" in hs.__all__
    doc = inspect.getdoc(plan.report)
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc
    for parameter in inspect.signature(plan.report).parameters:
        assert parameter in doc.split("Returns:")[0], parameter


def test_build_run_is_the_plan_without_a_budget(organism):
    options = _options()
    run = plan.build_run(organism, [get_task(name) for name in TASKS], options, **QUIET)
    assert run.options["budget"] is None and run.options["tasks"] == list(TASKS)
    assert dataclasses.asdict(options)["n"] == run.options["n"]


def test_a_detail_sample_keeps_every_score_and_details_the_first_prompts(organism):
    """`ov_detail_n`: the task rows of later prompts are capped at k in the one pass, so every
    score table is the full run's to the bit, while the per-token, per-keyword and category tables
    read the first prompts' instances alone (a subset of the full run's rows, with their n)."""
    said: list[str] = []
    whole = plan.run_plan(plan.plan_report(organism, list(TASKS), _options(), **PINNED, **QUIET), **QUIET)
    found = plan.plan_report(organism, list(TASKS), _options(ov_detail_n=4), **PINNED, **QUIET)
    sampled = plan.run_plan(found, said.append)
    assert sampled.options["ov_detail_n"] == 4 and whole.options["ov_detail_n"] is None
    capped = next(line for line in said if "one pass over the vocabulary" in line)
    assert "0 of them capped" not in capped  # the later prompts' rows and the atlas's
    for name in ("ov_scores", "labels", "atlas", "atlas_cards", "section_heads", "top_heads"):
        pdt.assert_frame_equal(sampled.table(name), whole.table(name), check_exact=True, obj=name)
    per_token, every = sampled.table("ov_per_token"), whole.table("ov_per_token")
    assert 0 < len(per_token) < len(every)
    inside = per_token.merge(every.drop_duplicates(), how="left", indicator=True)["_merge"]
    assert (inside == "both").all()  # each detail row is a row of the full table
    keywords, categories = sampled.table("ov_keywords"), whole.table("ov_keywords")
    assert keywords["n"].sum() < categories["n"].sum()
    shares, all_shares = sampled.table("ov_categories"), whole.table("ov_categories")
    assert (shares["n"] < all_shares["n"]).all() and (shares["n"] > 0).all()
    from headscope.report import head_views  # the page says which instances these tables read

    said = "the keyword instances of the first 4 prompts"
    assert said in head_views.category_view(sampled, "ioi").note
    blocks = head_views.keyword_blocks(sampled, "ioi")
    assert blocks and all(said in block.note for block in blocks)
    assert said not in head_views.category_view(whole, "ioi").note


def test_a_budgeted_plan_records_its_ov_detail_sample_and_prices_the_capped_rows_less(organism, monkeypatch):
    """A budget takes the OV detail sample (`budget.OV_DETAIL_PROMPTS` unless the options name one)
    and the OV pass is priced for the capped rows (blocks of 32 columns: the organism's 204-token
    vocabulary would be one block of the kernel's 1,024, where the exit saves nothing)."""
    from headscope.report import cost

    monkeypatch.setattr(cost, "OV_COLUMNS", 32)
    asked = _options(n=64)
    full = plan.plan_report(organism, list(TASKS), asked, **PINNED, **QUIET)
    found = plan.plan_report(organism, list(TASKS), asked, 1e6, **PINNED, **QUIET)
    assert full.options.ov_detail_n is None and found.options.ov_detail_n == budget.OV_DETAIL_PROMPTS
    named = plan.plan_report(organism, list(TASKS), _options(n=64, ov_detail_n=64), 1e6, **PINNED, **QUIET)
    assert named.options.ov_detail_n == 64  # a sample the options name is kept

    def ov(p):
        return next(phase for phase in p.phases if phase.name == "OV pass")

    assert ov(found).flops < ov(full).flops and ov(found).units == ov(full).units
    assert ov(named).flops == ov(full).flops  # every prompt in the sample: nothing capped but the atlas


def test_the_ov_pass_cost_prices_capped_rows_at_the_first_block_and_the_doubt_share():
    """`cost.ov_flops`: a row read whole costs its logits over the whole vocabulary; a capped row
    the first block's, and `OV_DOUBT` of the rest; each block in the cheaper of the two forms."""
    from headscope.report import cost

    shape = cost.Shape(18, 4, 640, 256, 262144, 0)  # the 270M class
    rows, heads = 3000, 72
    factors = heads * 2 * rows * 640 * 256
    whole = cost.ov_flops(shape, rows)
    assert whole == pytest.approx(heads * 2 * 256 * (640 + rows) * 262144 + factors)
    capped = cost.ov_flops(shape, rows, rows)  # every row capped: 180 rows in doubt, direct form
    first = 2 * 256 * (640 + rows) * 1024
    doubt = 2 * cost.OV_DOUBT * rows * 640 * (262144 - 1024)
    assert capped == pytest.approx(heads * (first + doubt) + factors)
    assert cost.ov_flops(shape, rows, 2000) < whole and cost.ov_flops(shape, rows, 2000) > capped


def test_the_plan_predicts_each_phase_s_peak_memory(organism):
    found = plan.plan_report(organism, list(TASKS), _options(knockout_n=8, circuit_n=4), **PINNED, **QUIET)
    table = found.table()
    resident = memory.resident_bytes(organism)
    assert "peak_gb" in table.columns and (table["peak_gb"] >= round(resident / 1e9, 2)).all()
    assert found.peak == max(phase.peak for phase in found.phases)  # tasks one after another
    assert found.peak == pytest.approx(table["peak_gb"].max() * 1e9, abs=0.005e9)
    more = plan.plan_report(organism, ["ioi"], _options(n=64), **PINNED, **QUIET)
    fewer = plan.plan_report(organism, ["ioi"], _options(n=16), **PINNED, **QUIET)
    capture = {p.name: p.memory for p in more.phases}["capture"], {p.name: p.memory for p in fewer.phases}
    assert capture[0] > capture[1]["capture"] > 0  # the capture keeps each prompt's rows
