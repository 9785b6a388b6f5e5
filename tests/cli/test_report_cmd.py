"""`headscope report` run as a subprocess on the tiny fixture model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def _files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_from_takes_the_results_file_and_names_an_older_layout(tiny_dir, tmp_path):
    out = tmp_path / "report"
    made = run_cli(
        "report", "--model", str(tiny_dir), "--tasks", "ioi", "--n", "4", "--top", "1", "--knockout-n", "0",
        "--out", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    again = run_cli("report", "--from", str(out / "results.json"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr  # DIR/results.json is read as DIR
    assert (tmp_path / "again" / "index.html").read_bytes() == (out / "index.html").read_bytes()

    old = Path(shutil.copytree(out, tmp_path / "old"))
    record = json.loads((old / "results.json").read_text())
    for table in record["tables"].values():  # an older layout: the head's layer under another name
        table["columns"] = ["lyr" if c == "layer" else c for c in table["columns"]]
    (old / "results.json").write_text(json.dumps(record))
    before = _files(old)
    refused = run_cli("report", "--from", str(old))
    assert refused.returncode == 2 and refused.stdout == ""
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert f"{old}/results.json does not fit this headscope's layout" in lines[0]
    assert f"re-run it: headscope report --out {old}" in lines[0]
    assert _files(old) == before  # the folder is left as it was


def test_from_a_file_that_is_not_results_json_is_one_line(tmp_path):
    other = tmp_path / "index.html"
    other.write_text("<html></html>")
    result = run_cli("report", "--from", str(other))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: --from {other} is a file; give the report folder that holds results.json"
    )
