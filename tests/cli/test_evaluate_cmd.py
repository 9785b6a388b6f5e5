"""`headscope evaluate` run as a subprocess: its JSON equals the library's numbers."""

from __future__ import annotations

import json

import pytest

from headscope.capture import capture
from headscope.scores.evaluate import EVALUATE_NEEDS, evaluate
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.cli.test_tasks_cmd import run_cli


def test_evaluate_writes_the_metrics(tmp_path, tiny_dir, tiny_model):
    out = tmp_path / "eval.json"
    args = ("--model", str(tiny_dir), "--task", "seq-months", "--n", "12", "--seed", "3", "--out", str(out))
    result = run_cli("evaluate", *args)
    assert result.returncode == 0, result.stderr
    assert "logit_diff" in result.stdout
    data = json.loads(out.read_text())
    dataset = build_dataset(get_task("seq-months"), tiny_model.tokens, 12, seed=3)
    expected = evaluate(dataset, capture(tiny_model, dataset, EVALUATE_NEEDS))
    for key in ("accuracy", "logit_diff", "answer_prob"):
        assert data[key] == pytest.approx(expected[key], abs=1e-6)
    assert data["n"] == 12 and data["task"] == "seq-months"


def test_evaluate_refuses_a_non_json_out(tiny_dir):
    result = run_cli("evaluate", "--model", str(tiny_dir), "--out", "result.csv")
    assert result.returncode == 2
    assert "use a .json file name" in result.stdout + result.stderr
