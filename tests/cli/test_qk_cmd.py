"""`headscope qk` run as a subprocess on a tiny random model."""

import pandas as pd

from headscope.scores.qk_attribution import COLUMNS
from tests.cli.runner import run_cli


def test_qk_prints_both_sides_and_writes_the_table(tiny_dir, tmp_path):
    out = tmp_path / "qk.csv"
    result = run_cli(
        "qk", "--model", str(tiny_dir), "--task", "seq-digits", "--n", "6", "--head", "1.2", "--key", "x4",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "head 1.2, score end -> x4" in result.stdout
        and "key side, largest exact share first" in result.stdout
    )
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS and (table["n"] == 6).all()
    assert list(table["side"]) == ["query"] * 6 + ["key"] * 6  # embed, heads 0.0-0.3, mlp0 on each side
    assert list(table["component"][:6]) == ["embed", "0.0", "0.1", "0.2", "0.3", "mlp0"]


def test_qk_refuses_a_role_the_task_lacks_in_one_line(tiny_dir):
    result = run_cli("qk", "--model", str(tiny_dir), "--task", "seq-digits", "--head", "1.0", "--key", "t8")
    assert result.returncode == 2
    assert "--key 't8': task seq-digits has no such role; roles:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
