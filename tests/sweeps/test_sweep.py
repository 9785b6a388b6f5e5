"""A sweep over a tiny organism's training checkpoints and a tiny Llama on a local Ray instance:
its tables equal single-model runs, a broken model is one line, a killed sweep resumes."""

from __future__ import annotations

import shutil
import sys

import pandas as pd
import pytest
from safetensors.torch import load_file

import headscope as hs
from headscope.cli import main
from headscope.errors import HeadscopeError
from headscope.models.loading import load_model
from headscope.report.plan import build_run
from headscope.sweeps import engine
from headscope.sweeps.plan import SweepOptions
from headscope.tasks.registry import get_task
from tests.sweeps.conftest import TASKS, N

DONE = ["step-00000", "step-00001", "step-00002", "step-00003", "tiny-llama"]


def test_checkpoints_are_the_recipe_at_each_step(checkpoints):
    folder, final = checkpoints
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-00000",
        "step-00001",
        "step-00002",
        "step-00003",
    ]
    last, first = (
        load_file(folder / "step-00003" / "model.safetensors"),
        load_file(final / "model.safetensors"),
    )
    assert all(last[name].equal(first[name]) for name in first)  # the last checkpoint is the model
    start = load_file(folder / "step-00000" / "model.safetensors")
    assert not start["transformer.h.1.attn.c_attn.weight"].equal(last["transformer.h.1.attn.c_attn.weight"])


def test_ray_sweep_runs_every_model_and_names_the_broken_one_in_one_line(ray_sweep):
    result, lines = ray_sweep
    summary = result.summary.set_index("name")
    assert summary.loc[DONE, "status"].eq("done").all()
    assert summary.loc["broken-model", "status"] == "failed"
    error = summary.loc["broken-model", "error"]
    assert "no weights" in error and "\n" not in error
    assert sum("broken-model failed: " in line for line in lines) == 1
    assert any("started a local Ray instance" in line for line in lines)
    assert any("2 at once" in line for line in lines)
    assert "broken-model: " in result.page.read_text()
    assert set(result.heads["name"]) == set(DONE)


def test_ray_is_shut_down_after_the_sweep(ray_sweep):
    import ray

    assert not ray.is_initialized()


def test_steps_are_parsed_from_folder_names_and_order_the_checkpoints(ray_sweep):
    summary = ray_sweep[0].summary
    stepped = summary[summary["step"].notna()]
    assert list(stepped["name"]) == DONE[:4] and list(stepped["step"]) == [0, 1, 2, 3]
    assert stepped["family"].nunique() == 1 and stepped["family"].iloc[0].endswith("step-*")
    llama = summary[summary["name"] == "tiny-llama"].iloc[0]
    assert pd.isna(llama["step"]) and llama["family"] == "models"


def _expected_scores(run) -> dict:
    """(task, layer, head, analysis) -> score, straight from a single run's own tables."""
    found = {}
    for row in run.table("ov_scores").itertuples(index=False):
        name = f"negative_{row.relation}" if row.sign in (-1, "negative") else row.relation
        found[(row.task, row.layer, row.head, name)] = row.score
    for row in run.table("detectors").itertuples(index=False):
        for column in ("induction", "previous_token", "duplicate_token"):
            found[(row.task, row.layer, row.head, column)] = getattr(row, column)
    for row in run.table("atlas").itertuples(index=False):
        name = f"atlas_negative_{row.relation}" if row.sign in (-1, "negative") else f"atlas_{row.relation}"
        found[("atlas", row.layer, row.head, name)] = row.within
    dla = run.table("dla")
    for row in dla[dla["kind"] == "head"].itertuples(index=False):
        found[(row.task, int(row.layer), int(row.head), "dla")] = row.dla
    return found


@pytest.mark.parametrize("name", DONE)
def test_cross_model_table_equals_a_single_model_run(ray_sweep, models, name):
    result, _ = ray_sweep
    model = load_model(str(models[name]), threads=1)
    single = build_run(
        model, [get_task(t) for t in TASKS], SweepOptions(TASKS, N).report_options(TASKS), print
    )
    expected = _expected_scores(single)
    mine = result.heads[result.heads["name"] == name]
    got = {(r.task, r.layer, r.head, r.analysis): r.score for r in mine.itertuples(index=False)}
    assert got.keys() == expected.keys()
    assert all(got[key] == pytest.approx(value, abs=1e-6, nan_ok=True) for key, value in expected.items())
    columns = ["task", "layer", "head", "label"]
    labels = result.labels[result.labels["name"] == name][columns]
    assert list(labels.itertuples(index=False)) == list(
        single.table("labels")[columns].itertuples(index=False)
    )
    evaluation = result.evaluation[result.evaluation["name"] == name]
    assert list(evaluation["accuracy"]) == pytest.approx(list(single.table("evaluation")["accuracy"]))


def _copy_of(result, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(result.out, out)
    return out


def test_a_killed_sweep_reruns_only_the_unfinished_models(ray_sweep, models, tmp_path, monkeypatch):
    result, _ = ray_sweep
    out = _copy_of(result, tmp_path)
    (folder,) = (out / "runs").glob("step-00002-*")
    shutil.rmtree(folder)  # killed before its folder was renamed into place: a partial one is left
    partial = out / "runs" / f".{folder.name}.partial-999999999-x"
    partial.mkdir()
    (partial / "results.json").write_text("{")
    ran = []
    real = engine.run_job
    monkeypatch.setattr(engine, "run_job", lambda job, *a: ran.append(job.name) or real(job, *a))
    lines = []
    again = hs.sweep([str(p) for p in models.values()], TASKS, out, n=N, jobs=1, say=lines.append)
    assert ran == ["step-00002", "broken-model"]  # a failed model is not finished: tried again
    skipped = [line.split()[1].rstrip(":") for line in lines if line.startswith("skipping")]
    assert sorted(skipped) == sorted(set(DONE) - {"step-00002"})
    assert not partial.exists() and (folder / "results.json").is_file()
    pd.testing.assert_frame_equal(again.heads, result.heads, atol=1e-6, rtol=0)
    assert list(again.summary["status"]) == [
        "skipped", "skipped", "done", "skipped", "skipped", "failed"
    ]  # fmt: skip


def test_an_interrupted_sweep_keeps_what_finished(ray_sweep, models, tmp_path, monkeypatch):
    """Ctrl-C during the second model: the first model's folder is whole, the rerun skips it."""
    chosen = [str(models["step-00000"]), str(models["step-00001"])]
    calls = []
    real = engine.run_job

    def interrupted(job, *rest):
        calls.append(job.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, *rest)

    monkeypatch.setattr(engine, "run_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hs.sweep(chosen, TASKS, tmp_path / "out", n=N, jobs=1, say=lambda line: None)
    monkeypatch.setattr(engine, "run_job", real)
    lines = []
    again = hs.sweep(chosen, TASKS, tmp_path / "out", n=N, jobs=1, say=lines.append)
    assert list(again.summary["status"]) == ["skipped", "done"]
    assert sum(line.startswith("skipping step-00000") for line in lines) == 1
    expected = ray_sweep[0].heads[ray_sweep[0].heads["name"].isin(["step-00000", "step-00001"])]
    pd.testing.assert_frame_equal(again.heads, expected.reset_index(drop=True), atol=1e-6, rtol=0)


def test_the_cli_resumes_a_sweep_and_prints_its_summary(ray_sweep, models, tmp_path, capsys):
    out = _copy_of(ray_sweep[0], tmp_path)
    given = ",".join(str(p) for p in models.values())
    code = main(
        [
            "sweep",
            "--models",
            given,
            "--tasks",
            ",".join(TASKS),
            "--n",
            str(N),
            "--jobs",
            "1",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.count("skipping") == len(DONE)
    assert "broken-model" in captured.out and "index.html" in captured.out


def test_without_ray_the_sweep_is_one_line_naming_the_extra(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(HeadscopeError, match=r"headscope\[ray\]"):
        hs.sweep([str(models["step-00000"])], TASKS, tmp_path / "a", n=N, jobs=2, say=lambda line: None)
    code = main(["sweep", "--models", str(models["step-00000"]), "--jobs", "2", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: sweep runs its jobs on Ray") and "pip install 'headscope[ray]'" in err


def test_the_page_draws_the_trajectories_offline_without_errors(ray_sweep, tmp_path):
    from tests.report.browser import visit

    seen = visit(ray_sweep[0].page, screenshot=tmp_path / "page.png")
    assert seen.console_errors == [] and seen.page_errors == [] and seen.requests == []
    (figure,) = seen.figures  # one family of checkpoints: one trajectory figure
    assert figure["svg"] > 0 and figure["height"] > 300
    assert "Models × tasks" in seen.text and "broken-model: " in seen.text
