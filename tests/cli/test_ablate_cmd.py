"""`headscope ablate` and `headscope patch` run as subprocesses on a tiny random model."""

import pandas as pd

from tests.cli.runner import run_cli


def test_ablate_writes_the_table(tiny_dir, tmp_path):
    out = tmp_path / "ablate.csv"
    result = run_cli(
        "ablate",
        "--model",
        str(tiny_dir),
        "--task",
        "seq-digits",
        "--n",
        "8",
        "--method",
        "zero",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clean metric" in result.stdout and "mlp1" in result.stdout
    table = pd.read_csv(out)
    columns = ["component", "layer", "head", "method", "metric", "pct_of_clean", "exact"]
    assert list(table.columns[:7]) == columns and table["exact"].all()
    assert list(table.columns[7:]) == ["effect", "n", "ci_low", "ci_high", "ci_kind"]
    assert len(table) == 2 * 4 + 2 and (table["method"] == "zero").all()


def test_ablate_exact_top_screens_the_other_heads(tiny_dir, tmp_path):
    out = tmp_path / "screened.csv"
    result = run_cli("ablate", "--model", str(tiny_dir), "--n", "8", "--exact-top", "3", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 heads are first-order estimates" in result.stdout
    table = pd.read_csv(out)
    assert int(table["exact"].sum()) == 3 + 2  # three heads and both MLPs


def test_ablate_exact_top_refusals_are_one_line(tiny_dir):
    negative = run_cli("ablate", "--model", str(tiny_dir), "--exact-top", "-1")
    assert negative.returncode == 2 and "--exact-top -1: give 0 or more heads" in negative.stderr
    with_keep = run_cli("ablate", "--model", str(tiny_dir), "--exact-top", "2", "--keep", "0.1")
    assert with_keep.returncode == 2 and "leave it out with --keep or --greedy" in with_keep.stderr


def test_ablate_keep_reports_percent_of_clean(tiny_dir):
    result = run_cli(
        "ablate", "--model", str(tiny_dir), "--n", "6", "--keep", "0.1,mlp0", "--positions", "end"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pct_of_clean" in result.stdout and "0.1,mlp0" in result.stdout


def test_ablate_greedy_prints_its_circuit(tiny_dir):
    result = run_cli(
        "ablate",
        "--model",
        str(tiny_dir),
        "--n",
        "6",
        "--greedy",
        "--components",
        "mlps",
        "--threshold",
        "50",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "greedy circuit" in result.stdout


def test_ablate_bad_component_is_one_clear_line(tiny_dir):
    result = run_cli("ablate", "--model", str(tiny_dir), "--n", "4", "--keep", "9.9")
    assert result.returncode == 2
    assert "head 9.9 does not exist" in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""


def test_patch_prints_a_layer_by_head_grid(tiny_dir, tmp_path):
    out = tmp_path / "patch.csv"
    result = run_cli("patch", "--model", str(tiny_dir), "--n", "6", "--direction", "noise", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "noise patching: layer x head" in result.stdout and "h3" in result.stdout
    assert len(pd.read_csv(out)) == 8


def test_patch_approx_says_it_is_an_approximation(tiny_dir, tmp_path):
    out = tmp_path / "approx.csv"
    result = run_cli("patch", "--model", str(tiny_dir), "--n", "6", "--approx", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "APPROXIMATION" in result.stdout
    assert pd.read_csv(out)["approximation"].all()
