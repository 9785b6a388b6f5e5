"""`headscope scores` run as a subprocess."""

import json

import pandas as pd
import pytest

from tests.cli.runner import run_cli
from tests.scores.test_ov import MEMBERS, NEXT, save_hand_built


@pytest.fixture(scope="module")
def hand_dir(tmp_path_factory):
    return save_hand_built(tmp_path_factory.mktemp("hand_cli"))


def test_keywords_find_the_successor_head(hand_dir, tmp_path):
    out, per_token = tmp_path / "scores.csv", tmp_path / "tokens.json"
    result = run_cli(
        "scores", "--model", str(hand_dir), "--keywords", " ".join(MEMBERS), "--relation", "copy,next",
        "--k", "3", "--embedding", "token", "--negative", "--out", str(out), "--per-token", str(per_token),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "layer",
        "head",
        "relation",
        "sign",
        "k",
        "embedding",
        "score",
        "hits",
        "n",
    ]
    best = table.sort_values("score", ascending=False, kind="stable")
    assert set(best.head(3).score) == {1.0}
    row = table[(table.layer == 1) & (table["head"] == NEXT) & (table.relation == "next") & (table.sign == 1)]
    assert row.score.item() == 1.0 and row.n.item() == len(MEMBERS) - 1
    tokens = json.loads(per_token.read_text())
    assert {"keyword", "target", "rank", "hit", "topk"} <= set(tokens[0])
    lines = result.stdout.splitlines()
    first_head_line = next(line for line in lines if "1.0" in line or "1.1" in line or "1.2" in line)
    assert "1.000" in first_head_line  # the top heads come first in the console table


def test_task_and_chosen_heads(tiny_dir, tmp_path):
    out = tmp_path / "scores.json"
    result = run_cli(
        "scores", "--model", str(tiny_dir), "--task", "seq-digits", "--heads", "1.0,0.3",
        "--n", "5", "--seed", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert {(r["layer"], r["head"]) for r in records} == {(1, 0), (0, 3)}
    assert {r["relation"] for r in records} == {"copy", "next"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--k", "0"), "k must be at least 1"),
        (("--k", "100000"), "larger than the vocabulary"),
        (("--keywords", "1 2 zzzqqq"), "not in the model's vocabulary"),
        (("--relation", "sideways"), "unknown relation 'sideways'"),
        (("--heads", "9.9"), "head 9.9 does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_dir, args, message):
    base = () if "--keywords" in args else ("--task", "seq-digits", "--n", "2")
    result = run_cli("scores", "--model", str(tiny_dir), *base, *args)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_task_or_keywords_not_both(tiny_dir):
    result = run_cli("scores", "--model", str(tiny_dir), "--task", "seq-digits", "--keywords", "1 2")
    assert result.returncode == 2 and "exactly one of --task" in result.stdout + result.stderr
