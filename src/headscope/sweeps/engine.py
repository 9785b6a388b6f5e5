"""Where a sweep's jobs run: on Ray (a local instance, or a user's cluster by address), or one
after another in this process (`jobs=1`, no Ray needed).

Ray does the scheduling: each job is a Ray task of `job.run_job` in a Ray worker process, which
loads its model and lets it go at the end; a worker runs job after job, except for models of more
than FRESH_WORKER_BYTES of weights, which get a fresh worker each (`max_calls=1`, so their memory
goes back to the system); the local instance gets as many CPUs as jobs may run at once, so Ray
runs that many. GPUs are given per job (`num_gpus`: one each while there are enough, else an
equal share of them). The local instance starts small: no dashboard, a 100 MB object store
(the jobs pass only their results back: the tables stay in the run folders) and workers' logs
kept off the terminal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from headscope.errors import HeadscopeError
from headscope.models.checks import first_line
from headscope.sweeps.job import JobResult, run_job
from headscope.sweeps.plan import Capacity, Job, SweepOptions

OnResult = Callable[[JobResult], None]
Say = Callable[[str], None]
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MiB
# Models with more weights than this get a fresh worker each (the worker exits after the job, so
# the memory goes back to the system); smaller ones share workers, which pay once for what a new
# process pays (imports, the first forward pass, the compiled OV kernel): 4 organism jobs took
# 119 s through 2 fresh workers each against 51 s one after another in one process.
FRESH_WORKER_BYTES = 1 << 30
RAY_MISSING = (
    "sweep runs its jobs on Ray, which is not installed: pip install 'headscope[ray]', "
    "or run the models one after another without it (--jobs 1, or jobs=1 in Python)"
)


def run_in_process(
    jobs: Sequence[Job], options: SweepOptions, threads: int | None, on_result: OnResult
) -> None:
    """Each job in turn in this process."""
    for job in jobs:
        on_result(run_job(job, options, threads))


def import_ray():
    """The ray module, or the one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError as error:
        raise HeadscopeError(RAY_MISSING) from error
    return ray


def run_on_ray(
    jobs: Sequence[Job],
    options: SweepOptions,
    capacity: Capacity,
    address: str | None,
    on_result: OnResult,
    say: Say,
) -> float:
    """Every job as a Ray task; results handed to `on_result` as they finish. Returns Ray's
    start-up (or connection) time in seconds. Ray is shut down (or disconnected) at the end."""
    ray = import_ray()
    started = time.perf_counter()
    start_ray(ray, address, capacity, options)
    startup = time.perf_counter() - started
    where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
    try:
        gpus = gpus_per_job(ray, capacity.jobs, options)
        say(f"started {where} in {startup:.1f} s" + (f"; {gpus:g} GPU per job" if gpus else ""))
        fresh = max(job.weight_bytes or 0 for job in jobs) > FRESH_WORKER_BYTES
        calls = 1 if fresh else 0  # 0: a worker runs job after job
        task = ray.remote(num_cpus=capacity.threads, num_gpus=gpus, max_calls=calls, max_retries=0)(run_job)
        pending = {task.remote(job, options, capacity.threads): job for job in jobs}
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            on_result(_result(ray, ready, pending.pop(ready)))
    finally:
        ray.shutdown()
    return startup


def start_ray(ray, address: str | None, capacity: Capacity, options: SweepOptions) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report sent from here
    quiet = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    try:
        if address is not None:
            ray.init(address=address, **quiet)
            return
        ray.init(
            num_cpus=capacity.jobs * capacity.threads,
            num_gpus=local_gpus(options),
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            _system_config={"worker_niceness": 0},  # Ray's 15 left the jobs to any other process
            **quiet,
        )
    except ConnectionError as error:
        raise HeadscopeError(
            f"ray_address={address}: cannot connect ({first_line(error)}); check the address"
        ) from error


def local_gpus(options: SweepOptions) -> int:
    if options.device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count()


def gpus_per_job(ray, jobs_at_once: int, options: SweepOptions) -> float:
    """One GPU per job while there are enough; else the GPUs shared equally; 0 on the CPU."""
    gpus = 0 if options.device == "cpu" else int(ray.cluster_resources().get("GPU", 0))
    if gpus == 0:
        return 0.0
    return 1.0 if gpus >= jobs_at_once else gpus / jobs_at_once


def _result(ray, ref, job: Job) -> JobResult:
    """The task's result; a worker that died (killed for memory, say) is that job's failure."""
    try:
        return ray.get(ref)
    except Exception as error:
        return JobResult(job, "failed", error=f"its Ray worker failed: {first_line(error)}")
