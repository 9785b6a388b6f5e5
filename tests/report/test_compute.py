"""The report's computations: tables per task, patterns against Hugging Face, determinism."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from transformers import GPT2LMHeadModel

from headscope.models.loading import load_model
from headscope.report import task_choice
from headscope.report.compute import first_prompts
from headscope.report.selection import (
    attention_roles,
    compare_tasks,
    keyword_order,
    keyword_table,
    scatter_roles,
    section_heads,
    top_heads,
)
from headscope.report.task_choice import doable_tasks
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.report.conftest import NO_DLA, REPORT_TASKS, make_run


def test_every_table_is_per_task_with_the_task_column_first(report_run):
    expected = {"tasks", "evaluation", "ov_scores", "ov_per_token", "ov_categories", "role_attention", "dla"}
    expected |= {"labels", "top_heads", "scatter_points", "scatter_stats", "patterns", "tokens", "prompts"}
    expected |= {"section_heads", "ov_keywords", "head_card", "edges", "circuit"}
    assert expected <= set(report_run.tables)
    for name in expected:
        assert report_run.tables[name].columns[0] == "task", name
    assert set(report_run.table("detectors")["task"]) == {"induction"}  # whole patterns only there
    assert set(report_run.table("evaluation")["task"]) == {*REPORT_TASKS, "xss<b>task</b>"}


def test_example_patterns_equal_hugging_face_attention(report_run, report_model_dir):
    hf = GPT2LMHeadModel.from_pretrained(report_model_dir, attn_implementation="eager").eval()
    tokens = report_run.for_task("tokens", "ioi")
    patterns = report_run.for_task("patterns", "ioi")
    assert set(patterns["prompt"]) == set(range(10))  # the viewer's 10 example prompts
    for prompt in (0, 9):
        ids = tokens[tokens["prompt"] == prompt].sort_values("position")["token_id"].tolist()
        with torch.no_grad():
            attentions = hf(torch.tensor([ids]), output_attentions=True).attentions
        mine = patterns[patterns["prompt"] == prompt]
        assert len(mine) == 2 * 4 * len(ids)  # every head of the 2 x 4 model, one row per destination
        for row in mine.itertuples(index=False):
            weights = [float(w) for w in row.attention.split(" ")]
            expected = attentions[row.layer][0, row.head, row.dest, : row.dest + 1]
            assert len(weights) == row.dest + 1
            assert max(abs(w - float(e)) for w, e in zip(weights, expected, strict=True)) <= 5e-5


def test_same_seed_same_numbers(report_model, tmp_path):
    first = make_run(report_model, [get_task("ioi")], n=8, seed=5)
    second = make_run(report_model, [get_task("ioi")], n=8, seed=5)
    other = make_run(report_model, [get_task("ioi")], n=8, seed=6)
    assert first.content_sha256() == second.content_sha256()
    assert first.content_sha256() != other.content_sha256()
    first.save(tmp_path / "a")
    second.save(tmp_path / "b")
    for path in (tmp_path / "a").glob("*.csv"):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_top_heads_by_absolute_dla():
    dla = pd.DataFrame(
        {
            "component": ["embed", "0.0", "0.1", "mlp0", "1.0", "1.1"],
            "layer": pd.array([None, 0, 0, 0, 1, 1], dtype="Int64"),
            "head": pd.array([None, 0, 1, None, 0, 1], dtype="Int64"),
            "dla": [9.0, 0.5, -2.0, 5.0, 1.0, -0.1],
        }
    )
    table = top_heads({"dla": dla}, 3)
    assert list(zip(table["layer"], table["head"], strict=True)) == [(0, 1), (1, 0), (0, 0)]
    assert set(table["by"]) == {"|DLA|"}
    assert top_heads({}, 3).empty


def test_gemma2_dla_and_circuit_are_computed_under_the_frozen_norm_convention(gemma2_run):
    assert gemma2_run.table("not_computed").empty
    for name in ("dla", "edges", "circuit"):
        assert set(gemma2_run.for_task(name, "ioi")["convention"]) == {"frozen-norm"}, name
    assert set(gemma2_run.for_task("top_heads", "ioi")["by"]) != {"knockout effect |% of clean - 100|"}


def test_without_dla_the_report_ranks_heads_by_the_knockout_effect(no_dla_run):
    gemma2_run = no_dla_run
    assert gemma2_run.table("dla").empty and "dla" not in gemma2_run.tables
    refused = gemma2_run.for_task("not_computed", "ioi")
    assert refused["analysis"].tolist() == ["DLA"]
    assert refused["why"].iloc[0] == NO_DLA
    knockout = gemma2_run.for_task("knockout", "ioi")
    heads = knockout[knockout["head"].notna()]
    effect = {(int(r.layer), int(r.head)): abs(r.pct_of_clean - 100) for r in heads.itertuples()}
    by_hand = sorted(effect, key=lambda h: (-effect[h], h))[:3]  # a plain sort, ties by layer, head
    top = gemma2_run.for_task("top_heads", "ioi")
    assert list(zip(top["layer"], top["head"], strict=True)) == by_hand
    assert set(top["by"]) == {"knockout effect |% of clean - 100|"}
    scatter = gemma2_run.for_task("section_heads", "ioi").query("section == 'scatter'")
    assert list(zip(scatter["layer"], scatter["head"], strict=True))[:3] == by_hand  # no mover labels
    assert "dla" not in gemma2_run.table("head_card").columns
    assert set(gemma2_run.table("not_computed")["analysis"]) == {"DLA"}
    assert not gemma2_run.table("comparison").empty


def test_compare_tasks_separates_common_from_specific_heads():
    top = pd.DataFrame({"task": ["a", "a", "b"], "layer": [0, 1, 0], "head": [0, 1, 0]})
    labels = pd.DataFrame({"task": ["b"], "layer": [2], "head": [3], "label": ["successor"]})
    table = compare_tasks({"top_heads": top, "labels": labels}, ("a", "b"))
    assert table.to_dict(orient="records") == [
        {"layer": 0, "head": 0, "tasks": "a,b", "n_tasks": 2, "scope": "every task"},
        {"layer": 1, "head": 1, "tasks": "a", "n_tasks": 1, "scope": "some tasks"},
        {"layer": 2, "head": 3, "tasks": "b", "n_tasks": 1, "scope": "some tasks"},
    ]


def test_scatter_and_attention_roles_merge_groups():
    assert scatter_roles(get_task("ioi")) == ("IO", "S")
    assert scatter_roles(get_task("seq-digits")) == ("x1", "x2", "x3", "x4")
    assert attention_roles(get_task("ioi")) == ("IO", "S")
    assert attention_roles(get_task("recency")) == ("S_r1", "S_r2")
    assert attention_roles(get_task("seq-digits")) == ("x4",)
    assert attention_roles(get_task("induction")) == ()


def test_first_prompts_keep_tokens_and_twins(report_model):
    dataset = build_dataset(get_task("ioi"), report_model.tokens, 10, 0)
    first = first_prompts(dataset, 4, report_model)
    width = int(first.lengths.max())
    assert torch.equal(first.tokens[:, :width], dataset.tokens[:4, :width])
    assert first.corrupted.prompts == dataset.corrupted.prompts[:4]
    assert first_prompts(dataset, 50, report_model) is dataset


def test_knockout_runs_on_the_first_prompts(report_run):
    knockout = report_run.for_task("knockout", "ioi")
    assert len(knockout) == 2 * 4 + 2  # every head and MLP of the 2 x 4 model
    assert report_run.options["knockout_n"] == 32


def test_the_exhaustive_reports_knockout_table_is_the_fixed_count_path(report_run, report_model):
    """No budget: one fixed count of prompts (here all 12), the plain `ablate` table, to the bit."""
    from headscope.scores.ablation import AblationOptions, ablate

    dataset = build_dataset(get_task("ioi"), report_model.tokens, 12, 0)
    expected = ablate(report_model, dataset.subset(32), AblationOptions())
    got = report_run.for_task("knockout", "ioi").drop(columns="task").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert "knockout_stops" not in report_run.tables


def test_a_budgeted_reports_knockouts_run_in_looks_and_say_where_they_stopped(tmp_path):
    """On the organism the successor head 2.1 stands far above the rest on seq-days (the order of
    the top 4 settles at the first look); on ioi the 4th and 5th heads stay within each other's
    intervals up to the cap. The table, the console and the page say so."""
    from headscope.report import plan
    from headscope.report.compute import ReportOptions
    from headscope.report.html import write_report
    from headscope.run import load_run

    organism = load_model("organism")
    options = ReportOptions(tasks=(), n=32, n_boot=50, circuit_n=0, qk_n=0, example_prompts=2)
    said: list[str] = []
    found = plan.plan_report(organism, ["seq-days", "ioi"], options, 1e6, said.append, rate=5e10, workers=1)
    run = plan.run_plan(found, said.append)
    stops = run.table("knockout_stops").set_index("task")
    assert stops.loc["seq-days", "prompts"] == 8 and stops.loc["seq-days", "outcome"] == "order settled"
    assert stops.loc["ioi", "prompts"] == 32 and stops.loc["ioi", "outcome"] == "cap reached"
    assert (stops["looks"] == "8,16,24,32").all() and (stops["level"] == 1 - 0.05 / 4).all()
    line = "  knockouts: order of the top 4 heads settled at 8 prompts (each look's intervals at 98.75%)"
    assert line in said
    knockout = run.table("knockout")
    assert (knockout.loc[knockout.task == "seq-days", "n"] == 8).all()
    assert (knockout["ci_kind"] == "t, sequential (4 looks)").all()
    run.save(tmp_path / "run")
    write_report(load_run(tmp_path / "run"), tmp_path / "page", say=lambda message: None)
    page = (tmp_path / "page" / "index.html").read_text()
    assert "knockout (mean, n=8)" in page and "knockout (mean, n=32)" in page
    assert "settled at 8 prompts; each look&#39;s intervals are at 98.75%" in page


def _ov(rows):
    return pd.DataFrame(
        [{"layer": lay, "head": h, "relation": r, "sign": sign, "score": v} for lay, h, r, sign, v in rows]
    )


def test_sections_lead_with_their_labelled_heads_then_their_top_scorers():
    ov = _ov(
        [
            (1, 0, "copy", 1, 0.9),
            (1, 1, "copy", 1, 1.0),
            (2, 1, "copy", 1, 0.8),
            (3, 0, "copy", 1, 0.0),
            (1, 0, "next", 1, 0.3),
            (1, 1, "next", 1, 0.2),
            (2, 1, "next", 1, 0.85),
            (3, 0, "next", 1, 0.0),
            (1, 0, "copy", -1, 0.0),
            (1, 1, "copy", -1, 0.1),
            (2, 1, "copy", -1, 0.0),
            (3, 0, "copy", -1, 0.99),
        ]
    )
    labels = pd.DataFrame(
        {"layer": [1, 2, 3], "head": [0, 1, 0], "label": ["name mover", "successor", "copy suppression"]}
    )
    dla = pd.DataFrame({"layer": [1, 1, 2, 3], "head": [0, 1, 1, 0], "dla": [0.5, -4.0, 1.0, 8.0]})
    table = section_heads({"ov_scores": ov, "labels": labels, "dla": dla}, 2)

    def heads(section):
        rows = table[table["section"] == section]
        return [(int(a), int(b)) for a, b in zip(rows["layer"], rows["head"], strict=True)]

    assert heads("copy") == [(1, 0), (1, 1)]  # the name mover first, then the top copy score
    assert heads("next") == [(2, 1), (1, 0)]  # the successor, not the top |DLA| heads
    assert heads("negative copy") == [(3, 0), (1, 1)]  # negative scores for the negative heads
    assert heads("scatter") == [(3, 0), (2, 1), (1, 0)]  # every labelled mover, by |DLA|
    why = {(s, r): w for s, r, w in table[["section", "rank", "why"]].itertuples(index=False)}
    assert why[("next", 0)] == "successor; next score 0.85"
    assert why[("copy", 1)] == "top copy score 1.00"


def test_keywords_in_the_task_order():
    per_token = pd.DataFrame(
        {
            "layer": 0,
            "head": 0,
            "relation": "next",
            "sign": 1,
            "keyword": ["10", "2", "1", "10", "zzz", "3"],
            "rank": [0, 4, 1, 2, 9, 0],
            "hit": [True, True, False, False, False, True],
            "topk": ["11 | 10", "3 | 2", "1 | 5", "10 | 11", "a | b", "4 | 3"],
        }
    )
    table = keyword_table(per_token, get_task("seq-digits"))
    assert table["keyword"].tolist() == ["1", "2", "3", "10", "zzz"]  # not "1", "10", "2", ...
    ten = table[table["keyword"] == "10"].iloc[0]
    assert (ten["n"], ten["hit"], ten["median_rank"], ten["topk"]) == (2, 0.5, 1.0, "11 | 10")
    months = keyword_order(get_task("seq-months"))
    assert months["January"] < months["February"] < months["December"]


def test_head_card_gathers_each_score_of_each_task(report_run):
    card = report_run.table("head_card")
    ov = report_run.table("ov_scores")
    row = card[(card["task"] == "seq-digits") & (card["layer"] == 1) & (card["head"] == 2)].iloc[0]
    for relation, sign, column in (("copy", 1, "copy"), ("next", 1, "next"), ("copy", -1, "negative_copy")):
        source = ov[(ov["task"] == "seq-digits") & (ov["layer"] == 1) & (ov["head"] == 2)]
        expected = source[(source["relation"] == relation) & (source["sign"] == sign)]["score"].iloc[0]
        assert row[column] == expected
    dla = report_run.for_task("dla", "seq-digits")
    assert row["dla"] == dla[dla["component"] == "1.2"]["dla"].iloc[0]
    knockout = report_run.for_task("knockout", "seq-digits")
    assert row["knockout_pct"] == knockout[knockout["component"] == "1.2"]["pct_of_clean"].iloc[0]
    assert len(card) == len(report_run.tasks) * 8


def test_every_head_can_be_picked_on_a_small_model(report_run):
    for table in ("ov_keywords", "scatter_stats", "patterns"):
        heads = report_run.for_task(table, "ioi")[["layer", "head"]].drop_duplicates()
        assert len(heads) == 8, table
    per_token = report_run.for_task("ov_per_token", "ioi")[["layer", "head"]].drop_duplicates()
    chosen = report_run.for_task("section_heads", "ioi")[["layer", "head"]].drop_duplicates()
    assert len(per_token) == len(chosen) < 8  # the per-instance table: the sections' heads only


def test_a_task_the_model_cannot_do_is_left_out():
    model = load_model("organism")
    tasks = [get_task("seq-digits"), get_task("seq-letters")]
    kept, left_out = doable_tasks(model, tasks)
    assert [t.name for t in kept] == ["seq-digits"]
    assert left_out == [
        ("seq-letters", "logit difference -0.21 no larger than on the corrupted twins (-0.18) on 32 prompts")
    ]


def test_a_task_done_imperfectly_stays_and_chance_is_the_pair_or_the_twin(monkeypatch):
    """Inclusion asks whether the model is better than chance, not whether its top-1 is right."""

    model = load_model("organism")
    dataset = build_dataset(get_task("seq-digits"), model.tokens, 32, 0)
    assert task_choice.at_chance(model, dataset) is None  # its top-1 is 1.00: trivially kept
    no_twin = dataclasses.replace(dataset, corrupted=None)
    swapped = dataclasses.replace(no_twin, answers=dataset.contrasts, contrasts=dataset.answers)
    assert (
        task_choice.at_chance(model, swapped)
        == "the answer beats the contrast on 0.00 of 32 prompts (chance 0.50)"
    )


def test_the_organism_labels_its_known_heads(organism_run):
    def labelled(task):
        table = organism_run.for_task("labels", task)
        return {(f"{r.layer}.{r.head}", r.label) for r in table.itertuples(index=False)}

    # 1.1 copies names but attends to S (0.54) more than to IO (0.46): no name mover.
    assert labelled("ioi") == {
        ("1.0", "name mover"),
        ("3.0", "copy suppression"),
        ("3.1", "copy suppression"),
    }
    # 2.1 fills its top 5 with the successor (next 0.89) and the digit itself (copy 0.88): first
    # among the digits only 0.40 of the time (chance 0.05), short of the successor's 0.50.
    assert labelled("seq-digits") == set()
    assert organism_run.options["left_out"] == {}


def test_the_circuit_is_the_smallest_of_the_curve_reaching_the_level_and_is_measured(
    report_run, report_model
):
    from headscope.report.compute import first_prompts
    from headscope.scores.circuit import edges as circuit_edges
    from headscope.scores.circuit.faithfulness import Evaluator

    edges, summary = report_run.for_task("edges", "ioi"), report_run.for_task("circuit", "ioi").iloc[0]
    exact = edges[edges["exact"].notna()]
    # the tiny model's 110 edges: patching every one exactly costs less than eap-ig and its check
    assert len(exact) == len(edges) == summary["exact_checked"] == summary["edges_total"] == 110
    assert summary["method"] == "exact" and not summary["approximation"]
    curve = report_run.for_task("circuit_curve", "ioi")
    reached = curve[(curve["edges"] > 0) & (curve["f"] >= 0.8)]
    size = int(reached["edges"].iloc[0])  # MIB's smallest circuit with normalized faithfulness >= 0.8
    by_score = edges.assign(size=edges["score"].abs()).sort_values("size", ascending=False, kind="stable")
    chosen = edges[edges["in_circuit"]]
    assert set(chosen.index) == set(by_score.index[:size]) and summary["circuit_edges"] == size
    assert summary["normalized"] >= 0.8 and "f >= 0.80" in summary["chosen_by"]
    assert (curve[curve["edges"].between(1, size - 1)]["f"] < 0.8).all()  # none smaller reaches it
    dataset = first_prompts(build_dataset(get_task("ioi"), report_model.tokens, 12, 0), 32, report_model)
    evaluator = Evaluator(report_model, dataset)  # three runs where the report makes one
    kept = set(circuit_edges.edges_of(chosen, report_model))
    assert abs(summary["clean"] - evaluator.metric(set(evaluator.every))) < 1e-4
    assert abs(summary["no_edges"] - evaluator.metric(set())) < 1e-4
    assert abs(summary["circuit"] - evaluator.metric(kept)) < 1e-6
    assert summary["faithfulness"] == pytest.approx(100 * summary["circuit"] / summary["clean"])
    assert summary["spearman"] == 1.0
    assert summary["stability_resamples"] == 200
    assert 0 <= summary["stability_low"] <= summary["stability"] <= 1
    assert summary["stable"] == (summary["stability"] >= 0.8)


def test_the_report_draws_mibs_curve_of_its_ranking(report_run):
    from headscope.scores.circuit import mib

    curve, summary = (
        report_run.for_task("circuit_curve", "ioi"),
        report_run.for_task("circuit", "ioi").iloc[0],
    )
    assert tuple(curve["fraction"]) == mib.FRACTIONS and list(curve["edges"]) == mib.edge_counts(110)
    assert curve["f"].iloc[0] == 0 and curve["f"].iloc[-1] == 1 and set(curve["method"]) == {"exact"}
    cpr, cmd = mib.areas(mib.FRACTIONS, list(curve["f"]))
    assert summary["cpr"] == pytest.approx(cpr) and summary["cmd"] == pytest.approx(cmd)
    assert curve["m_full"].iloc[0] == summary["clean"] and curve["m_empty"].iloc[0] == summary["no_edges"]


def test_the_report_patches_every_edge_exactly_only_where_that_is_cheaper(monkeypatch):
    from headscope.report import compute
    from headscope.scores.circuit import edges

    model = load_model("organism")
    options = compute.ReportOptions(tasks=("ioi",))
    chosen = compute.circuit_options(model, options)  # 175 edges > 50 + 10 * (5 + 1)
    assert chosen.method == "eap-ig" and chosen.exact_top == 50
    monkeypatch.setattr(edges, "EDGES_PER_STEP", 25)  # 50 + 25 * 6 >= 175
    assert compute.circuit_options(model, options).method == "exact"


def test_the_circuit_step_is_bounded_by_default_on_a_model_of_many_edges(monkeypatch):
    """By default the circuit runs on CIRCUIT_PROMPTS where the model is small (the organism's 175
    edges, every edge patched exactly) and, on a larger one, eap-ig on LARGE_CIRCUIT_PROMPTS with
    its top LARGE_EXACT_TOP edges patched exactly; asked for, it runs as asked."""
    from headscope.report import compute

    model = load_model("organism")
    options = compute.ReportOptions(tasks=("ioi",))
    assert compute.circuit_prompts(model, None) == compute.CIRCUIT_PROMPTS
    assert compute.circuit_prompts(model, 0) == 0
    monkeypatch.setattr(compute, "AUTO_CIRCUIT_EDGES", 100)
    assert compute.circuit_prompts(model, None) == compute.LARGE_CIRCUIT_PROMPTS == 4
    assert compute.circuit_prompts(model, 8) == 8
    bounded = compute.circuit_options(model, options)
    assert bounded.method == "eap-ig" and bounded.exact_top == compute.LARGE_EXACT_TOP
    asked = compute.circuit_options(model, dataclasses.replace(options, circuit_n=8))
    assert asked.exact_top == options.circuit_exact


def test_screened_knockouts_are_exact_for_the_heads_the_page_names(report_model, tmp_path):
    from headscope.report.compute import ReportOptions
    from headscope.report.head_views import head_card_view
    from headscope.report.html import write_report
    from headscope.report.plan import build_run
    from headscope.scores.ablation import AblationOptions, ablate

    options = ReportOptions(tasks=("ioi",), n=12, top_heads=2, n_boot=50, knockout_exact=1, circuit_n=0)
    run = build_run(report_model, [get_task("ioi")], options, say=lambda message: None)
    knockout = run.for_task("knockout", "ioi")
    heads = knockout[knockout["head"].notna()]
    named = run.for_task("section_heads", "ioi")[["layer", "head"]]
    named = {
        (int(a), int(b))
        for a, b in pd.concat([named, run.for_task("labels", "ioi")[["layer", "head"]]]).values
    }
    exact = {(int(a), int(b)) for a, b in heads[heads["exact"]][["layer", "head"]].values}
    assert named <= exact and len(exact) <= len(named) + 1  # the named heads and the screen's top one
    assert not heads["exact"].all() and knockout.loc[knockout["head"].isna(), "exact"].all()
    dataset = build_dataset(get_task("ioi"), report_model.tokens, 12, 0)
    plain = ablate(report_model, dataset, AblationOptions())  # every component exact
    mine = knockout["exact"].to_numpy()
    assert (knockout["metric"].to_numpy()[mine] == plain["metric"].to_numpy()[mine]).all()
    write_report(run, tmp_path, say=lambda message: None)
    page = (tmp_path / "index.html").read_text()
    assert f"≈: {int((~heads['exact']).sum())} of {len(heads)} estimated, rest exact" in page
    card = head_card_view(run)
    knockout_row = next(row for row in card.rows if row[1] == "knockout % of clean")
    assert any(cell.startswith("≈") for cell in knockout_row[2:])


def test_knockouts_are_screened_by_default_only_on_models_of_more_than_48_heads():
    from types import SimpleNamespace

    from headscope.report.compute import KNOCKOUT_EXACT, knockout_exact

    assert knockout_exact(SimpleNamespace(n_layers=4, n_heads=2), None) is None  # the organism
    assert knockout_exact(SimpleNamespace(n_layers=6, n_heads=8), None) is None
    assert knockout_exact(SimpleNamespace(n_layers=12, n_heads=12), None) == KNOCKOUT_EXACT  # GPT-2 small
    assert knockout_exact(SimpleNamespace(n_layers=12, n_heads=12), 144) is None  # asked: every head
    assert knockout_exact(SimpleNamespace(n_layers=4, n_heads=2), 3) == 3
