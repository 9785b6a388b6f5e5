"""One job of a sweep: load one model and write its run folder exactly as `headscope report` does.

The job calls the report's own core (`report.compute.build_run`, `report.html.write_report`),
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
    from headscope.models.loading import load_model
    from headscope.report.compute import build_run
    from headscope.report.html import write_report
    from headscope.tasks.registry import get_task

    model = load_model(
        job.spec,
        device=options.device,
        dtype=options.dtype,
        threads=threads,
        allow_pickle=options.allow_pickle,
    )
    names = options.tasks if options.tasks is not None else spelled_tasks(model)
    run = build_run(model, [get_task(name) for name in names], options.report_options(names), _quiet)
    write_report(run, job.folder, _quiet, pngs=options.pngs)


def spelled_tasks(model) -> tuple[str, ...]:
    """The built-in tasks this model's tokenizer can spell (every prompt word one token)."""
    from headscope.tasks.dataset import build_dataset
    from headscope.tasks.registry import builtin_tasks

    kept = []
    for name, task in builtin_tasks().items():
        try:
            build_dataset(task, model.tokens, 2, 0)
        except ValueError:  # TaskError, or a generator's pool that is too small
            continue
        kept.append(name)
    return tuple(kept)


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
