"""The plan of a sweep without any model: steps, families, the model list, memory, the ETA line."""

from __future__ import annotations

import pytest

from headscope.errors import HeadscopeError
from headscope.sweeps import plan
from headscope.sweeps.core import Progress
from headscope.sweeps.job import JobResult
from headscope.sweeps.plan import GIVEN_FAMILY, Job, SweepOptions, capacity, model_list, plan_jobs, step_of


@pytest.mark.parametrize(
    ("name", "step"),
    [("step-00300", 300), ("checkpoint-1500", 1500), ("ckpt_3_of_9", 9), ("final", None), ("run7b", 7)],
)
def test_the_step_is_the_last_whole_number_of_the_folder_name(tmp_path, name, step):
    (tmp_path / name).mkdir()
    assert step_of(str(tmp_path / name)) == step


def test_hub_names_and_the_organism_have_no_step():
    assert (
        step_of("gpt2") is None and step_of("EleutherAI/pythia-70m") is None and step_of("organism") is None
    )


def test_checkpoints_are_ordered_by_step_within_their_family(tmp_path):
    names = ["step-300", "step-20", "step-1000", "other-5"]
    for name in names:
        (tmp_path / name).mkdir()
    jobs = plan_jobs([str(tmp_path / n) for n in names], None, tmp_path / "out")
    assert [j.name for j in jobs] == ["step-20", "step-300", "step-1000", "other-5"]
    assert {j.family for j in jobs[:3]} == {str(tmp_path / "step-*")}
    assert len({j.folder for j in jobs}) == 4


def test_given_steps_order_every_model_as_one_family(tmp_path):
    jobs = plan_jobs(["organism", "gpt2"], [200, 100], tmp_path)
    assert [(j.name, j.step, j.family) for j in jobs] == [
        ("gpt2", 100, GIVEN_FAMILY),
        ("organism", 200, GIVEN_FAMILY),
    ]
    with pytest.raises(HeadscopeError, match=r"steps=\[1\]: 1 steps for 2 models"):
        plan_jobs(["organism", "gpt2"], [1], tmp_path)


def test_models_come_from_a_list_a_pattern_or_a_file(tmp_path):
    for name in ("step-2", "step-1"):
        (tmp_path / name).mkdir()
    assert model_list(f"{tmp_path}/step-*,organism", None) == [
        str(tmp_path / "step-1"),
        str(tmp_path / "step-2"),
        "organism",
    ]
    listing = tmp_path / "models.txt"
    listing.write_text("# checkpoints\norganism\n\ngpt2  # the hub's\n")
    assert model_list(None, listing) == ["organism", "gpt2"]
    with pytest.raises(HeadscopeError, match="matches no folder"):
        model_list(f"{tmp_path}/nothing-*", None)
    with pytest.raises(HeadscopeError, match="one of the two"):
        model_list("organism", listing)


def _job(tmp_path, size: int | None) -> Job:
    return Job("m", "m", None, "models", tmp_path, size)


def test_jobs_at_once_are_bounded_by_memory_cores_and_what_is_asked(tmp_path, monkeypatch):
    gb = 1 << 30
    monkeypatch.setattr(plan, "available_bytes", lambda: 10 * gb)
    small, large = _job(tmp_path, 0), _job(tmp_path, 3 * gb)  # ~1 GB and ~10 GB estimated
    assert capacity([small] * 8, None, cores=4).jobs == 4  # the cores
    assert capacity([small] * 8, 2, cores=4).jobs == 2 and capacity([small] * 8, 2, cores=4).threads == 2
    assert capacity([small] * 3, None, cores=16).jobs == 3  # the models
    assert capacity([small, large], None, cores=4).jobs == 1  # 0.8 x 10 GB holds one 10 GB job at most
    assert "1 at once: each ~10.0 GB" in capacity([large, small], None, cores=4).describe()


def test_a_run_is_reused_only_with_the_same_options():
    options = SweepOptions(("induction",), n=50)
    saved = options.report_options(("induction",)).as_dict() | {"task_sources": ["induction"]}
    assert options.matches(saved)
    assert not options.matches(saved | {"n": 60})
    assert not options.matches(saved | {"task_sources": ["induction", "ioi"]})
    assert not SweepOptions(("induction",), n=50, extras=("knockouts",)).matches(saved)


def test_the_eta_is_the_wall_time_per_finished_job_times_the_jobs_left(tmp_path):
    lines, results, now = [], {}, iter([100.0, 110.0, 130.0])
    progress = Progress(total=5, results=results, say=lines.append, clock=lambda: next(now))
    job = _job(tmp_path, 0)
    progress(JobResult(job, "done", seconds=10.0, peak_mb=512))
    progress(JobResult(job, "failed", seconds=30.0, error="no weights"))
    assert lines[0] == "[1/5] m done in 10.0 s, peak 0.50 GB; ETA 40 s for 4 more"  # 10 s a job x 4
    assert lines[1] == "[2/5] m failed: no weights; ETA 45 s for 3 more"  # 30 s / 2 jobs x 3
    assert list(results.values())[0].error == "no weights"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"add": "atlas"}, "add='atlas': choose from knockouts, circuit"),
        ({"jobs": 0}, "jobs=0: give 1 or more"),
        ({"tasks": "no-such-task"}, "no-such-task"),
        ({"n": 0}, "n=0: give at least 1 prompt"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads(tmp_path, arguments, message):
    import headscope as hs

    with pytest.raises(HeadscopeError, match=message.replace("(", r"\(")):
        hs.sweep("organism", **{"tasks": "induction", "out": tmp_path / "out"} | arguments)


def test_the_cli_names_its_flags_in_errors(tmp_path, capsys):
    from headscope.cli import main

    assert main(["sweep", "--models", "organism", "--add", "atlas", "--out", str(tmp_path / "o")]) == 2
    assert "--add 'atlas': choose from knockouts, circuit" in capsys.readouterr().err
    assert main(["sweep", "--models", "organism", "--steps", "1,x", "--out", str(tmp_path / "o")]) == 2
    assert "--steps 1,x: give whole numbers" in capsys.readouterr().err
    assert main(["sweep", "--out", str(tmp_path / "o")]) == 2
    assert "--models not given: give the models" in capsys.readouterr().err


def test_a_folder_of_other_files_is_not_taken_for_a_sweep(tmp_path):
    import headscope as hs

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HeadscopeError, match="holds files but no sweep.json"):
        hs.sweep("organism", "induction", tmp_path)
