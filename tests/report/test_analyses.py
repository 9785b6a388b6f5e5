"""The report's computations: tables per task, patterns against Hugging Face, determinism."""

from __future__ import annotations

import pandas as pd
import torch
from transformers import GPT2LMHeadModel

from headscope.report.analyses import attention_roles, compare_tasks, first_prompts, scatter_roles, top_heads
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.report.conftest import REPORT_TASKS, make_run


def test_every_table_is_per_task_with_the_task_column_first(report_run):
    expected = {"tasks", "evaluation", "ov_scores", "ov_per_token", "ov_categories", "role_attention", "dla"}
    expected |= {"labels", "top_heads", "scatter_points", "scatter_stats", "patterns", "tokens", "prompts"}
    assert expected <= set(report_run.tables)
    for name in expected:
        assert report_run.tables[name].columns[0] == "task", name
    assert set(report_run.table("detectors")["task"]) == {"induction"}  # whole patterns only there
    assert set(report_run.table("evaluation")["task"]) == {*REPORT_TASKS, "xss<b>task</b>"}


def test_example_patterns_equal_hugging_face_attention(report_run, report_model_dir):
    hf = GPT2LMHeadModel.from_pretrained(report_model_dir, attn_implementation="eager").eval()
    tokens = report_run.for_task("tokens", "ioi")
    patterns = report_run.for_task("patterns", "ioi")
    assert set(patterns["prompt"]) == {0, 1}
    for prompt in (0, 1):
        ids = tokens[tokens["prompt"] == prompt].sort_values("position")["token_id"].tolist()
        with torch.no_grad():
            attentions = hf(torch.tensor([ids]), output_attentions=True).attentions
        mine = patterns[patterns["prompt"] == prompt]
        assert len(mine) == 3 * len(ids) * (len(ids) + 1) // 2  # 3 top heads, lower triangle
        for row in mine.itertuples(index=False):
            expected = float(attentions[row.layer][0, row.head, row.dest, row.src])
            assert abs(row.attention - expected) < 1e-5


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
    assert top_heads({"dla": dla}, 3) == [(0, 1), (1, 0), (0, 0)]
    assert top_heads({}, 3) == []


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
