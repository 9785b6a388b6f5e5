"""Run: save and load keep every number; the same content gives the same bytes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from headscope.run import RESULTS_FILE, Run, RunError, _table_record, load_run
from headscope.run_tables import TABLES


def _run(created: str = "2026-01-01T00:00:00+00:00") -> Run:
    tables = {
        "scores": pd.DataFrame(
            {
                "task": ["ioi", "ioi", "seq-digits"],
                "layer": np.array([0, 1, 1], dtype=np.int64),
                "head": pd.array([0, None, 2], dtype="Int64"),
                "score": [0.1, 1 / 3, float("nan")],
                "hit": [True, False, True],
                "topk": ["<script>", "a | b", "ü"],
            }
        ),
        "evaluation": pd.DataFrame({"task": ["ioi"], "accuracy": [0.95], "logit_diff": [2.5], "n": [200]}),
    }
    return Run(
        tables,
        {"tasks": ["ioi", "seq-digits"], "n": 200},
        {"name": "tiny", "n_layers": 2},
        seed=3,
        created=created,
    )


def test_save_load_round_trip_keeps_every_value(tmp_path):
    run = _run()
    run.save(tmp_path)
    back = load_run(tmp_path)
    assert back.seed == 3 and back.options == run.options and back.model == run.model
    assert back.versions == run.versions and back.created == run.created
    scores = back.table("scores")
    assert scores["layer"].tolist() == [0, 1, 1]
    assert scores["score"].iloc[1] == 1 / 3  # exact: JSON floats round-trip
    assert np.isnan(scores["score"].iloc[2])
    assert pd.isna(scores["head"].iloc[1]) and scores["head"].iloc[2] == 2
    assert scores["topk"].tolist() == ["<script>", "a | b", "ü"]
    assert back.content_sha256() == run.content_sha256()


def test_one_csv_per_table_and_results_json(tmp_path):
    _run().save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation.csv", RESULTS_FILE, "scores.csv"]
    csv = pd.read_csv(tmp_path / "scores.csv")
    assert csv["score"].iloc[0] == 0.1 and list(csv.columns) == [
        "task",
        "layer",
        "head",
        "score",
        "hit",
        "topk",
    ]
    record = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert record["tables"]["scores"]["rows"][2][3] is None  # NaN is written as null
    assert {"torch", "pandas", "python"} <= set(record["versions"])


def test_same_content_same_bytes_apart_from_the_timestamp(tmp_path):
    _run("2026-01-01T00:00:00+00:00").save(tmp_path / "a")
    _run("2027-06-30T12:00:00+00:00").save(tmp_path / "b")
    for name in ("scores.csv", "evaluation.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a = (tmp_path / "a" / RESULTS_FILE).read_text()
    b = (tmp_path / "b" / RESULTS_FILE).read_text()
    assert a != b
    assert a.replace("2026-01-01T00:00:00+00:00", "T") == b.replace("2027-06-30T12:00:00+00:00", "T")


def test_for_task_filters_rows():
    run = _run()
    assert run.for_task("scores", "seq-digits")["layer"].tolist() == [1]
    assert run.table("missing").empty
    assert run.tasks == ("ioi", "seq-digits")


def test_load_errors_name_the_fix(tmp_path):
    with pytest.raises(RunError, match="headscope report --out"):
        load_run(tmp_path)
    (tmp_path / RESULTS_FILE).write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(tmp_path)
    (tmp_path / RESULTS_FILE).write_text('{"format": 99}')
    with pytest.raises(RunError, match="format 99"):
        load_run(tmp_path)


def test_a_table_without_a_column_the_page_reads_is_refused_in_one_line(tmp_path):
    """A run whose evaluation has no logit_diff (as an older headscope might have written it, its
    hash intact) is refused on loading, naming the table, the column and the command."""
    run = _run()
    older = Run({**run.tables, "evaluation": run.tables["evaluation"].drop(columns="logit_diff")}, {}, {}, 0)
    older.save(tmp_path)
    with pytest.raises(RunError) as refused:
        load_run(tmp_path)
    message = str(refused.value)
    assert message == (
        f"{tmp_path / RESULTS_FILE} does not fit this headscope's layout: its table 'evaluation' has no "
        "column 'logit_diff' (an older headscope wrote it); re-run the report with this version: "
        f"headscope report --out {tmp_path} (with its --model and --tasks)"
    )
    assert "\n" not in message and "logit_diff" in TABLES["evaluation"].columns


def test_an_empty_table_or_one_not_in_the_registry_is_not_checked(tmp_path):
    tables = {"evaluation": pd.DataFrame({"task": []}), "mine": pd.DataFrame({"x": [1]})}
    Run(tables, {}, {}, 0).save(tmp_path)
    assert set(load_run(tmp_path).tables) == {"evaluation", "mine"}


def test_a_string_column_is_recorded_as_its_object_twin_is():
    values = ["a", None, "b"]
    arrow = pd.DataFrame({"name": pd.array(values, dtype="string")})
    plain = pd.DataFrame({"name": pd.Series(values, dtype=object)})
    assert _table_record(arrow)["rows"] == _table_record(plain)["rows"] == [["a"], [None], ["b"]]
