"""`headscope report` run as a subprocess on the tiny fixture model."""

from __future__ import annotations

from tests.cli.runner import run_cli


def test_report_writes_page_data_and_summary_then_rerenders(tiny_dir, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "report", "--model", str(tiny_dir), "--tasks", "ioi", "--n", "6", "--top", "2", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"report: {out.resolve() / 'index.html'}" in result.stdout.replace("\n", "")
    assert "summary" in result.stdout and "ioi" in result.stdout
    for name in ("index.html", "results.json", "evaluation.csv", "ov_scores.csv", "ioi-dla.png"):
        assert (out / name).is_file(), name
    again = run_cli("report", "--from", str(out), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "again" / "index.html").read_bytes() == (out / "index.html").read_bytes()


def test_bad_task_and_missing_results_are_one_line(tiny_dir, tmp_path):
    result = run_cli("report", "--model", str(tiny_dir), "--tasks", "ioi,nope")
    assert result.returncode == 2 and "unknown task 'nope'" in result.stderr
    missing = run_cli("report", "--from", str(tmp_path))
    assert missing.returncode == 2 and "results.json does not exist" in missing.stderr.replace("\n", "")
    assert "Traceback" not in result.stdout + result.stderr + missing.stdout + missing.stderr
