"""One job of a sweep: load one model and write its run folder exactly as `headscope report` does.

The job calls the report's own core (`report.plan.plan_report` and `run_plan`, which writes the page),
so a sweep's run folder is a report folder (`headscope report --from` renders it). A failure of
the model (missing files, an architecture headscope refuses, any error while scoring) is
returned as one line; it never stops the other jobs.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass
from typing import Literal

import psutil

from headscope.errors import HeadscopeError
from headscope.models.checks import first_line
from headscope.sweeps.plan import Job, SweepOptions

Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class JobResult:
    """What became of one job: done (its folder written), skipped (finished before) or failed."""

    job: Job
    status: Status
    seconds: float = 0.0
    peak_mb: float | None = None
    error: str = ""


def run_job(job: Job, options: SweepOptions, threads: int | None = None) -> JobResult:
    """Load `job`'s model, compute its run and write its folder; a failure comes back as one line."""
    started = time.perf_counter()
    try:
        write_run(job, options, threads)
    except Exception as error:  # any failure of this model is this model's alone
        return JobResult(job, "failed", time.perf_counter() - started, _peak_mb(), _why(error))
    finally:
        gc.collect()
    return JobResult(job, "done", time.perf_counter() - started, _peak_mb())


def write_run(job: Job, options: SweepOptions, threads: int | None) -> None:
    """The report's plan on this model, run into the job's folder. Every checkpoint gets the same
    tasks (those named, else every built-in task the tokenizer spells: an early checkpoint at
    chance on a task stays in, so its trajectory starts there), at the same sample sizes (no budget)."""
    from headscope.models.loading import load_model
    from headscope.report.plan import plan_report, run_plan
    from headscope.report.task_choice import spelled_tasks

    model = load_model(
        job.spec,
        device=options.device,
        dtype=options.dtype,
        threads=threads,
        allow_pickle=options.allow_pickle,
    )
    names = options.tasks if options.tasks is not None else tuple(t.name for t in spelled_tasks(model))
    plan = plan_report(model, names, options.report_options(names), say=_quiet)
    run_plan(plan, _quiet, out=job.folder, pngs=options.pngs)


def _quiet(message: str) -> None:
    """The report's progress lines are not shown per job: the sweep prints one line a job."""


def _why(error: BaseException) -> str:
    """One line: a headscope error's own message, else the exception's type and first line."""
    text = (
        first_line(error)
        if isinstance(error, HeadscopeError)
        else f"{type(error).__name__}: {first_line(error)}"
    )
    return " ".join(text.split())


def _peak_mb() -> float:
    """This process's peak resident memory (a Ray worker runs one job: that job's peak); where
    the system keeps no peak (Windows: no `resource` module), the resident memory now."""
    try:
        import resource
    except ImportError:
        return psutil.Process().memory_info().rss / (1 << 20)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
