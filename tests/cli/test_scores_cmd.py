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
        "ci_low",
        "ci_high",
        "ci_kind",
    ]
    assert (table.ci_kind == "wilson").all()  # a given keyword list: its words are not drawn in prompts
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


def test_signed_relations_are_the_rows_of_both_signs(hand_dir, tmp_path):
    """copy, -copy and next in one invocation: the same rows as --negative's, and nothing else."""
    words = " ".join(MEMBERS)
    base = ("scores", "--model", str(hand_dir), "--keywords", words, "--k", "3", "--embedding", "token")
    signed, both = tmp_path / "signed.csv", tmp_path / "both.csv"
    first = run_cli(*base, "--relation", "copy,-copy,next", "--out", str(signed))
    second = run_cli(*base, "--relation", "copy,next", "--negative", "--out", str(both))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    got, every = pd.read_csv(signed), pd.read_csv(both)
    assert set(zip(got.relation, got.sign, strict=True)) == {("copy", 1), ("copy", -1), ("next", 1)}
    wanted = every[~((every.relation == "next") & (every.sign == -1))].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, wanted)
    header = next(line for line in first.stdout.splitlines() if "head" in line and "copy" in line)
    assert "-copy" in header and "-next" not in header


def test_a_bare_minus_is_one_line(tiny_dir):
    result = run_cli("scores", "--model", str(tiny_dir), "--keywords", "1 2 3", "--relation", "copy,-")
    assert result.returncode == 2 and "give a relation name after '-'" in result.stderr
    assert "Traceback" not in result.stderr
