"""The labelled heads' QK attribution in the report: the run's table is the core's (`hs.qk_attribution`)
on the key each label reads, it saves and loads back, and the head card shows it; on the organism
the induction heads attend to the token after the first occurrence because of the previous-token
heads on the key side (issue 33's must-be-shown)."""

from __future__ import annotations

import html
from dataclasses import replace

import pandas as pd
import pandas.testing as pdt
import pytest

import headscope as hs
from headscope.analyses import qk
from headscope.models.loading import load_model
from headscope.report.compute import ReportOptions
from headscope.report.head_views import head_card_view
from headscope.report.html import write_report
from headscope.report.merge import merge_runs
from headscope.report.plan import build_run
from headscope.report.qk_views import qk_view, side_text
from headscope.run import load_run
from headscope.scores import labels
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task

PROMPTS = 8  # the knockouts' count: the QK attribution's prompts by default
INDUCTION_HEADS = ((2, 0), (2, 1))
PREVIOUS_TOKEN = {"1.0", "1.1"}


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


@pytest.fixture(scope="module")
def induction_run(organism):
    """The organism's report on induction (no circuit: the QK step does not read it)."""
    options = ReportOptions(
        tasks=("induction",), n=24, n_boot=50, knockout_n=PROMPTS, circuit_n=0, example_prompts=2
    )
    return build_run(organism, [get_task("induction")], options, say=lambda message: None)


def _head(table: pd.DataFrame, layer: int, head: int) -> pd.DataFrame:
    return table[(table["layer"] == layer) & (table["head"] == head)]


def test_the_induction_heads_read_the_previous_token_heads_on_the_key_side(induction_run):
    table = induction_run.for_task("qk_attribution", "induction")
    for layer, head in INDUCTION_HEADS:
        mine = _head(table, layer, head)
        assert set(mine["label"]) == {"induction"} and set(mine["key_role"]) == {"t8"}
        assert set(mine["query_role"]) == {"end"} and (mine["n"] == PROMPTS).all()
        keys = mine[mine["side"] == "key"].sort_values("exact", ascending=False)
        assert set(keys["component"].iloc[:2]) == PREVIOUS_TOKEN, keys
        assert (keys["ci_low"].iloc[:2] > 0).all()  # each share positive beyond its interval
        assert (mine["spearman"] >= 0.8).all()  # first order agrees with exact over the components


def test_the_run_table_is_the_core_on_the_first_prompts(induction_run, organism):
    """The report calls the function `headscope qk` calls: the same computation, the same numbers."""
    table = induction_run.for_task("qk_attribution", "induction")
    data = build_dataset(get_task("induction"), organism.tokens, 24, 0).subset(PROMPTS)
    for layer, head in INDUCTION_HEADS:
        core = hs.qk_attribution(organism, data, head=f"{layer}.{head}", query="end", key="t8")
        mine = _head(table, layer, head)[core.columns].reset_index(drop=True)
        pdt.assert_frame_equal(mine, pd.DataFrame(core), check_exact=True, check_dtype=False)


def test_each_label_reads_the_key_of_its_attention_rule(organism):
    """The mapping comes from the rule rows: each label's required attention rule names its key."""
    columns = qk.label_columns()
    for label, column in columns.items():
        assert any(
            r.column == column and r.kind == "attention" and r.required for r in labels.rules_of(label)
        )
    assert columns["name mover"] == columns["negative name mover"] == "answer_attention"
    assert columns["copy suppression"] == "contrast_attention" and columns["induction"] == "induction"
    data = build_dataset(get_task("induction"), organism.tokens, 12, 0)
    found = {d: qk.detector_key(data, d) for d in ("induction", "previous_token", "duplicate_token")}
    assert found == {"induction": "t8", "previous_token": "r6", "duplicate_token": "t7"}
    rows, end = range(data.n), data.end
    at = {role: data.roles[role].index for role in found.values()}
    for b in rows:  # the words of the prompt: end repeats t7, t8 follows it, r6 precedes end
        assert data.tokens[b, at["t8"][b] - 1] == data.tokens[b, end[b]] == data.tokens[b, at["t7"][b]]
        assert at["r6"][b] == end[b] - 1


def test_copy_suppression_reads_the_member_of_s_it_attends_to_most(organism_run):
    table = organism_run.for_task("qk_attribution", "ioi")
    attention = organism_run.for_task("role_attention", "ioi")
    heads = organism_run.for_task("labels", "ioi")
    suppressors = heads[heads["label"] == "copy suppression"]
    assert len(suppressors) == 2
    for row in suppressors.itertuples(index=False):
        mine = _head(attention, row.layer, row.head)
        mine = mine[(mine["query_role"] == "end") & mine["key_role"].isin(["S1", "S2"])]
        most = mine.sort_values("attention", ascending=False)["key_role"].iloc[0]
        assert set(_head(table, row.layer, row.head)["key_role"]) == {most}
    movers = _head(table, 1, 0)
    assert set(movers["label"]) == {"name mover"} and set(movers["key_role"]) == {"IO"}


def test_the_table_saves_and_loads_back(induction_run, tmp_path):
    induction_run.save(tmp_path)
    loaded = load_run(tmp_path).table("qk_attribution")
    pdt.assert_frame_equal(loaded, induction_run.table("qk_attribution"), check_dtype=False)


def test_merged_runs_hold_the_rows_of_each_run(induction_run):
    """Per-task rows: merging runs puts them one after the other (here a copy under another name)."""
    renamed = {
        name: table.assign(task="induction-b") if "task" in table.columns else table
        for name, table in induction_run.tables.items()
    }
    tasks = {"tasks": ["induction-b"], "task_sources": ["induction-b"]}
    other = replace(induction_run, tables=renamed, options=induction_run.options | tasks)
    merged = merge_runs([induction_run, other])
    parts = [induction_run.table("qk_attribution"), other.table("qk_attribution")]
    pdt.assert_frame_equal(merged.table("qk_attribution"), pd.concat(parts, ignore_index=True))
    assert len(qk_view(merged).rows) == 2 * len(qk_view(induction_run).rows)


def test_the_head_card_shows_each_heads_leading_components(induction_run, tmp_path):
    card = head_card_view(induction_run)
    row = next(r for r in card.rows if r[1] == "QK end->t8, key side")
    for layer, head in INDUCTION_HEADS:
        cell = row[card.columns.index(f"{layer}.{head}")]
        names = [entry.split(" ")[0] for entry in cell.split(", ")]
        assert set(names[:2]) == PREVIOUS_TOKEN and "%" in cell, cell
    assert "QK end->t8, query side" in [r[1] for r in card.rows]
    detail = qk_view(induction_run)
    table = induction_run.for_task("qk_attribution", "induction")
    mine = _head(table, 2, 0)
    shown = next(r for r in detail.rows if r[:3] == ["induction", "2.0", "induction"])
    assert shown[detail.columns.index("n")] == str(PROMPTS)
    assert shown[detail.columns.index("key side")] == side_text(mine[mine["side"] == "key"], detail=True)
    first = mine[mine["side"] == "key"].sort_values("exact", ascending=False).iloc[0]
    assert f"[{first.ci_low:.2f}, {first.ci_high:.2f}]" in shown[detail.columns.index("key side")]
    write_report(induction_run, tmp_path, say=lambda message: None)
    page = (tmp_path / "index.html").read_text()
    assert detail.title in page and html.escape(shown[detail.columns.index("key side")]) in page


def test_a_side_names_its_largest_components_with_their_share():
    rows = pd.DataFrame(
        {
            "component": ["embed", "1.0", "1.1", "mlp0", "0.0"],
            "exact": [0.5, 3.0, 4.0, -2.0, 0.0],
            "ci_low": [0.1, 2.5, 3.0, -3.0, 0.0],
            "ci_high": [0.9, 3.5, 5.0, -1.0, 0.0],
        }
    )  # sum of |exact| 9.5: embed 5% (under 10%), 1.1 42%, 1.0 32%, mlp0 -21%
    assert side_text(rows) == "1.1 +42%, 1.0 +32%, mlp0 -21%"
    assert side_text(rows, detail=True).startswith(
        "1.1 +42% (4.00 [3.00, 5.00]), 1.0 +32% (3.00 [2.50, 3.50])"
    )
    assert side_text(rows.assign(exact=0.0)) == "none"
