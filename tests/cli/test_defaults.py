"""A command's defaults work on every built-in task, and on a TOML task that leaves keywords out."""

from __future__ import annotations

import json
import textwrap

import pytest

from headscope.scores.relations import default_relations
from headscope.tasks.registry import builtin_tasks
from tests.cli.runner import run_cli
from tests.tasks.task_files import MINIMAL

NO_KEYWORDS = MINIMAL.replace('keywords = ["IO", "S"]\n', "")


@pytest.mark.parametrize("task", ["ioi", "recency", "induction", "seq-digits"])
def test_scores_with_default_options_runs_on_every_kind_of_builtin_task(task, tmp_path):
    """`headscope scores --task ioi` once exited 2 (next has no target for names)."""
    out = tmp_path / "scores.json"
    result = run_cli("scores", "--task", task, "--n", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    relations = {record["relation"] for record in json.loads(out.read_text())}
    assert relations == set(default_relations(builtin_tasks()[task]))
    assert relations == ({"copy", "next"} if task.startswith("seq-") else {"copy"})


def test_a_task_file_without_keywords_runs_scores_and_report(tiny_dir, tmp_path):
    """Keywords left out: the answer's and the contrast's slots are scored (IO, S1, S2 here)."""
    path = tmp_path / "no_keywords.toml"
    path.write_text(textwrap.dedent(NO_KEYWORDS))
    out = tmp_path / "scores.csv"
    scores = run_cli("scores", "--model", str(tiny_dir), "--task", str(path), "--n", "6", "--out", str(out))
    assert scores.returncode == 0, scores.stderr
    assert "copy 18" in scores.stdout  # 6 prompts x the roles IO, S1, S2
    report = run_cli(
        "report", "--model", str(tiny_dir), "--tasks", str(path), "--n", "6", "--knockout-n", "0",
        "--out", str(tmp_path / "report"),
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "ov_scores.csv").is_file()
