"""`hs.sweep`: many models or checkpoints, one report run each, lined up in one table and page.

The sweep folder holds `sweep.json` (its options), `runs/<model>-<hash>/` (each a report folder,
written whole then renamed into place), and, rewritten at the end of every sweep from all the
finished runs: `heads.csv` (the long table), `labels.csv`, `evaluation.csv`, `first_labels.csv`,
`summary.csv` (one row per model: done, skipped or failed, with why), `index.html` and one
`trajectories-N.png` per family of checkpoints. A sweep rerun with the same folder skips the
models whose run is there with the same options and redoes the rest.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from headscope.errors import HeadscopeError
from headscope.files import write_json, write_table, write_text
from headscope.options import names
from headscope.run import FORMAT_VERSION, RESULTS_FILE, load_run
from headscope.sweeps import engine
from headscope.sweeps.figures import trajectory_png
from headscope.sweeps.job import JobResult
from headscope.sweeps.page import PAGE_FILE, render_sweep_page
from headscope.sweeps.plan import EXTRAS, Capacity, Job, SweepOptions, capacity, model_list, plan_jobs
from headscope.sweeps.tables import first_labels, sweep_tables

SWEEP_FILE = "sweep.json"
Say = Callable[[str], None]


@dataclass(frozen=True)
class SweepResult:
    """The sweep's tables (also saved as CSVs in `out`), its page and Ray's start-up time."""

    out: Path
    heads: pd.DataFrame
    labels: pd.DataFrame
    evaluation: pd.DataFrame
    first_labels: pd.DataFrame
    summary: pd.DataFrame
    page: Path
    ray_startup_s: float | None = None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sweep(
    models: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] | None = None,
    out: str | Path = "headscope-sweep",
    *,
    models_file: str | Path | None = None,
    steps: Sequence[int] | None = None,
    n: int = 200,
    seed: int = 0,
    k: int = 5,
    add: str | Sequence[str] = (),
    jobs: int | None = None,
    ray_address: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    pngs: bool = False,
    say: Say = _stderr,
) -> SweepResult:
    """Run the report's analyses on every model and line their heads up across models.

    Args:
        models: models or checkpoints: "M1,M2", a list, or a folder pattern ("ckpt/step-*"); each is
            "organism", a local Hugging Face folder or a hub name. Or `models_file`: one a line.
        tasks: task names or TOML files (default: every built-in task each model can spell).
        out: the sweep's folder; a rerun with the same folder skips the finished models.
        steps: the training step of each model, in the order given (default: the last whole
            number in each local folder's name).
        n, seed, k: prompts per task, their seed, the OV scores' top k (as the report).
        add: analyses beyond the default (evaluation, OV scores, attention, DLA, labels):
            "knockouts", "circuit".
        jobs: models at once (default: what the cores and memory allow); 1 runs them one after
            another in this process, without Ray.
        ray_address: run the jobs on this Ray cluster ("auto", "ray://host:10001") instead of a
            local instance.
        device, dtype: where and in what precision each model runs.
        pngs: also draw each run's per-figure PNGs (most of a small model's time).
        say: where progress lines go (stderr).

    Returns:
        A `SweepResult`: `.heads` (family, model, name, step, task, layer, head, analysis,
        score), `.labels`, `.evaluation`, `.first_labels`, `.summary`, `.page`.

    Example:
        >>> result = hs.sweep("ckpts/step-*", tasks="induction,seq-digits", out="sweep")
        >>> result.first_labels
    """
    options = sweep_options(tasks, n, seed, k, add, device, dtype, pngs)
    specs = model_list(models, Path(models_file) if models_file is not None else None)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise HeadscopeError(f"jobs={jobs!r}: give 1 or more (1: one after another, without Ray)")
    out = prepare_folder(Path(out), options, specs, steps)
    planned = plan_jobs(specs, steps, out)
    todo, results = pending_jobs(planned, options, say)
    startup = run_jobs(todo, options, jobs, ray_address, results, say) if todo else None
    return finish(out, planned, results, startup, say)


def sweep_options(tasks, n, seed, k, add, device, dtype, pngs=False) -> SweepOptions:
    from headscope.tasks.registry import get_task

    chosen = names(tasks, "tasks") if tasks is not None else None
    for name in chosen or ():
        get_task(name)  # a typo fails before any model loads
    extras = names(add, "add") if add else ()
    for extra in extras:
        if extra not in EXTRAS:
            raise HeadscopeError(f"add={extra!r}: choose from {', '.join(EXTRAS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise HeadscopeError(f"n={n!r}: give at least 1 prompt")
    return SweepOptions(chosen, n, seed, k, extras=extras, device=device, dtype=dtype, pngs=pngs)


def prepare_folder(out: Path, options: SweepOptions, specs: list[str], steps) -> Path:
    """`out`, new, empty or an earlier sweep's; its sweep.json written now (a killed sweep's
    folder is known as one on the rerun)."""
    if out.exists() and not out.is_dir():
        raise HeadscopeError(f"out={out}: it is a file; give a folder for the sweep")
    if out.is_dir() and any(out.iterdir()) and not (out / SWEEP_FILE).is_file():
        raise HeadscopeError(f"out={out} holds files but no {SWEEP_FILE}; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    record = {"options": options.__dict__ | {"tasks": options.tasks}, "models": specs, "steps": steps}
    write_json(out / SWEEP_FILE, record)
    return out


def pending_jobs(
    planned: list[Job], options: SweepOptions, say: Say
) -> tuple[list[Job], dict[Job, JobResult]]:
    """The jobs to run, and those finished by an earlier sweep with these options (skipped)."""
    todo, results = [], {}
    for job in planned:
        saved = _saved_options(job.folder)
        if saved is not None and options.matches(saved):
            say(f"skipping {job.name}: finished in an earlier sweep ({job.folder})")
            results[job] = JobResult(job, "skipped")
            continue
        if saved is not None:
            say(f"redoing {job.name}: its run in {job.folder} has other options")
        todo.append(job)
    return todo, results


def _saved_options(folder: Path) -> dict | None:
    """The options in a run folder's results.json (its tables are not built: a rerun stays quick);
    None when there is none or it cannot be read (the run is redone)."""
    try:
        record = json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record.get("options") if record.get("format") == FORMAT_VERSION else None


def run_jobs(todo, options, jobs, address, results: dict, say: Say) -> float | None:
    """Run the jobs (Ray, or in this process for jobs=1); results land in `results` as they end."""
    if jobs == 1 and address is None:
        say(f"{len(todo)} model(s) to run, one after another in this process")
        engine.run_in_process(todo, options, None, Progress(len(todo), results, say))
        return None
    engine.import_ray()  # the one-line error naming the extra, before anything starts
    plan = capacity(todo, jobs) if address is None else Capacity(jobs or len(todo), 1, 0, 0, 0)
    say(f"{len(todo)} model(s) to run; " + (plan.describe() if address is None else f"on {address}"))
    return engine.run_on_ray(todo, options, plan, address, Progress(len(todo), results, say), say)


class Progress:
    """One line per finished job on stderr, with the ETA of the rest: the wall time so far per
    finished job x the jobs left (worker start-up and jobs running side by side included)."""

    def __init__(self, total: int, results: dict, say: Say, clock: Callable[[], float] = time.perf_counter):
        self.total, self.results, self.say, self.clock = total, results, say, clock
        self.started, self.finished = clock(), 0

    def __call__(self, result: JobResult) -> None:
        self.results[result.job] = result
        self.finished += 1
        left = self.total - self.finished
        eta = (self.clock() - self.started) / self.finished * left
        what = f"done in {result.seconds:.1f} s" if result.status == "done" else f"failed: {result.error}"
        peak = f", peak {result.peak_mb / 1024:.2f} GB" if result.peak_mb and result.status == "done" else ""
        tail = f"; ETA {_duration(eta)} for {left} more" if left else ""
        self.say(f"[{self.finished}/{self.total}] {result.job.name} {what}{peak}{tail}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def finish(out: Path, planned: list[Job], results: dict, startup: float | None, say: Say) -> SweepResult:
    """Read every finished run back; write the cross-model tables, the figures and the page."""
    finished = [(job, load_run(job.folder)) for job in planned if results[job].status != "failed"]
    tables = sweep_tables(finished)
    tables["first_labels"] = first_labels(tables["labels"], [job for job, _ in finished])
    summary = summary_table(planned, results, out)
    for name, table in [*tables.items(), ("summary", summary)]:
        write_table(out / f"{name}.csv", table)
    _write_pngs(out, tables)
    page = write_text(out / PAGE_FILE, render_sweep_page(tables, summary))
    counts = summary["status"].value_counts()
    say(f"sweep: {', '.join(f'{counts.get(s, 0)} {s}' for s in ('done', 'skipped', 'failed'))}; page {page}")
    return SweepResult(out, **tables, summary=summary, page=page, ray_startup_s=startup)


def _write_pngs(out: Path, tables: dict) -> None:
    heads = tables["heads"]
    families = [f for f in dict.fromkeys(heads.loc[heads["step"].notna(), "family"])]
    for number, family in enumerate(families, start=1):
        trajectory_png(heads, tables["first_labels"], family, out / f"trajectories-{number}.png")


def summary_table(planned: list[Job], results: dict, out: Path) -> pd.DataFrame:
    rows = [
        {
            "family": job.family,
            "model": job.spec,
            "name": job.name,
            "step": job.step,
            "status": results[job].status,
            "seconds": round(results[job].seconds, 2),
            "peak_mb": None if results[job].peak_mb is None else round(results[job].peak_mb),
            "error": results[job].error,
            "folder": str(job.folder.relative_to(out)),
        }
        for job in planned
    ]
    return pd.DataFrame(rows).astype({"step": "Int64", "peak_mb": "Int64"})
