"""`headscope report` run as a subprocess on the tiny fixture model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from headscope.run import _sha256
from tests.cli.runner import run_cli


def test_report_writes_page_data_and_summary_then_rerenders(tiny_dir, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "report", "--model", str(tiny_dir), "--tasks", "ioi", "--n", "6", "--top", "2", "--out", str(out),
        "--png",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"report: {out.resolve() / 'index.html'}" in result.stdout.replace("\n", "")
    assert "summary" in result.stdout and "ioi" in result.stdout
    for name in ("index.html", "results.json", "evaluation.csv", "ov_scores.csv", "ioi-dla.png"):
        assert (out / name).is_file(), name
    again = run_cli("report", "--from", str(out), "--out", str(tmp_path / "again"), "--png")
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
    record["content_sha256"] = _sha256(
        {k: v for k, v in record.items() if k not in ("created", "content_sha256")}
    )
    (old / "results.json").write_text(json.dumps(record))  # as an older headscope would have written it
    before = _files(old)
    refused = run_cli("report", "--from", str(old))
    assert refused.returncode == 2 and refused.stdout == ""
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert (
        f"{old}/results.json does not fit this headscope's layout: its table 'atlas' has no column 'layer'"
        in lines[0]
    )
    assert f"re-run the report with this version: headscope report --out {old}" in lines[0]
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


def test_a_gemma2_report_says_its_dla_convention_and_merges_to_the_same_page(tmp_path):
    """Gemma 2 (norms on the head outputs, soft-capped logits): DLA under the frozen-norm convention, said."""
    from tests.models.families import BY_NAME, save_family

    model = save_family(BY_NAME["gemma2"], tmp_path / "gemma2")
    out = tmp_path / "report"
    args = ("--tasks", "ioi", "--n", "6", "--knockout-n", "4", "--out", str(out))
    result = run_cli("report", "--model", str(model), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert "DLA: convention: frozen-norm for gemma2" in said and "logits are taken before any cap" in said
    dla = pd.read_csv(out / "dla.csv")
    assert list(dla.columns[-5:]) == ["convention", "n", "ci_low", "ci_high", "ci_kind"]
    assert (dla["convention"] == "frozen-norm").all() and (dla["n"] == 6).all()
    again = run_cli("report", "--from", str(out), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "again" / "index.html").read_bytes() == (out / "index.html").read_bytes()


def test_runs_on_different_tasks_merge_into_one_page_and_others_are_refused(tiny_dir, tmp_path):
    quick = ("--model", str(tiny_dir), "--n", "6", "--knockout-n", "0", "--top", "2")
    for tasks in ("ioi", "seq-digits"):
        done = run_cli("report", *quick, "--tasks", tasks, "--out", str(tmp_path / tasks))
        assert done.returncode == 0, done.stdout + done.stderr
    other = run_cli("report", *quick, "--seed", "1", "--tasks", "induction", "--out", str(tmp_path / "s1"))
    assert other.returncode == 0, other.stdout + other.stderr
    merged = tmp_path / "merged"
    result = run_cli(
        "report", "--from", str(tmp_path / "ioi"), str(tmp_path / "seq-digits"), "--out", str(merged), "--png"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((merged / "results.json").read_text())
    assert run["options"]["tasks"] == ["ioi", "seq-digits"]
    assert "ioi" in result.stdout and "seq-digits" in result.stdout  # the summary of both
    assert (merged / "ioi-copy-score.png").is_file() and (merged / "seq-digits-next-score.png").is_file()
    refusals = {
        "seed differs (0 vs 1)": (str(tmp_path / "ioi"), str(tmp_path / "s1"), "--out", str(tmp_path / "x")),
        "task 'ioi' is in both": (str(tmp_path / "ioi"), str(merged), "--out", str(tmp_path / "y")),
        "a folder of its own": (str(tmp_path / "ioi"), str(tmp_path / "seq-digits")),
    }
    for words, args in refusals.items():
        refused = run_cli("report", "--from", *args)
        assert refused.returncode == 2 and words in " ".join(refused.stderr.split()), refused.stderr
        assert "Traceback" not in refused.stderr
    stray = run_cli("report", "--model", str(tiny_dir), str(tmp_path / "ioi"))
    assert stray.returncode == 2 and "folders to merge follow --from" in stray.stderr


def test_plan_prints_the_phases_and_writes_nothing(tiny_dir, tmp_path):
    out = tmp_path / "planned"
    result = run_cli(
        "report", "--model", str(tiny_dir), "--tasks", "ioi", "--n", "6", "--plan", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    assert "s predicted for a budget of 300 s" in text.replace("\n", " ")
    for phase in ("OV pass", "capture", "knockouts", "circuit", "atlas", "page"):
        assert phase in result.stdout, phase
    assert not out.exists()


def test_a_bad_budget_is_one_line(tiny_dir):
    for flags, said in (
        (("--budget", "0"), "--budget 0: give a positive number of seconds"),
        (("--budget", "10", "--exhaustive"), "without --exhaustive"),
    ):
        result = run_cli("report", "--model", str(tiny_dir), "--tasks", "ioi", *flags)
        assert result.returncode == 2 and said in result.stderr.replace("\n", " "), result.stderr
        assert "Traceback" not in result.stderr
