"""`headscope scatter` run as a subprocess: statistics, figures and errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from scipy import stats

from headscope.cli import main
from tests.cli.test_tasks_cmd import run_cli


def test_scatter_json_stats_agree_with_scipy_on_its_points(tmp_path, tiny_dir):
    out = tmp_path / "s.json"
    args = ("--model", str(tiny_dir), "--task", "ioi", "--head", "1.1", "--n", "30", "--scale", "ln_final")
    result = run_cli("scatter", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert (data["head"], data["scale"]) == ("1.1", "ln_final")
    points = pd.DataFrame(data["points"])
    assert set(points.role) == {"IO", "S"}  # the default roles of ioi
    table = pd.DataFrame(data["stats"]).set_index("role")
    for role, part in [("IO", points[points.role == "IO"]), ("pooled", points)]:
        expected = stats.pearsonr(part.attention, part.projection)
        assert table.loc[role, "r"] == pytest.approx(expected.statistic, abs=1e-9)
        assert table.loc[role, "n"] == len(part)
    assert "pooled" in result.stdout


def test_scatter_figures(tmp_path, tiny_dir):
    common = ("--model", str(tiny_dir), "--task", "seq-days", "--head", "0.2", "--n", "8")
    page = tmp_path / "s.html"
    assert run_cli("scatter", *common, "--roles", "x4,x3", "--out", str(page)).returncode == 0
    text = page.read_text()
    assert "Plotly.newPlot" in text and "<script src=" not in text and "x3: r=" in text
    image = tmp_path / "s.png"
    assert run_cli("scatter", *common, "--out", str(image)).returncode == 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--scale", "huge"), "--scale 'huge'"),
        (("--roles", "Bob"), "unknown role 'Bob'"),
        (("--out", "x.txt"), "--out x.txt"),
    ],
)
def test_scatter_errors_are_one_line(tiny_dir, extra, message, capsys):
    code = main(["scatter", "--model", str(tiny_dir), "--head", "0.0", "--n", "3", *extra])  # in-process
    printed = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert message in printed and "Traceback" not in printed


def test_scatter_over_several_batches_of_different_widths(tiny_dir, tmp_path):
    out = tmp_path / "s.csv"
    code = main(["scatter", "--model", str(tiny_dir), "--head", "0.0", "--n", "200", "--out", str(out)])
    assert code == 0
    assert len(pd.read_csv(out)) == 2 * 200
