"""`headscope report`: a model and tasks in, a self-contained page plus JSON/CSV (PNGs: --png) out."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.markup import escape

from headscope.cli import report_options as opt
from headscope.cli.app import Shared, command, line, print_table, results
from headscope.cli.common import load
from headscope.cli.report_from import DEFAULT_OUT, results_folder, saved_run
from headscope.errors import HeadscopeError
from headscope.models.memory import available_bytes
from headscope.report.budget import DEFAULT_BUDGET
from headscope.report.compute import ReportOptions
from headscope.report.console import not_computed_notes, plan_progress, summary_table
from headscope.report.html import PAGE_FILE, check_report_folder, write_report
from headscope.report.plan import ReportPlan, plan_report, run_plan
from headscope.run import Run
from headscope.tasks.registry import get_task


def task_list(text: str | None) -> tuple[str, ...] | None:
    """The tasks named (each checked now, so a typo fails before the model loads); None: the default."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not names:
        raise HeadscopeError("empty --tasks: give task names like ioi,seq-digits, or leave it out for all")
    for name in names:
        get_task(name)
    return names


def say(message: str) -> None:
    line(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


@command("report", out=False)
def report(
    shared: Shared,
    tasks: opt.TasksOpt = None,
    out: opt.ReportOutOpt = DEFAULT_OUT,
    top: opt.TopOpt = 4,
    k: opt.KOpt = 5,
    embedding: opt.EmbeddingOpt = "context",
    knockout_n: opt.KnockoutOpt = 32,
    knockout_exact: opt.KnockoutExactOpt = None,
    circuit_n: opt.CircuitNOpt = None,
    circuit_edges: opt.CircuitEdgesOpt = None,
    budget: opt.BudgetOpt = None,
    exhaustive: opt.ExhaustiveOpt = False,
    plan: opt.PlanOpt = False,
    from_dir: opt.FromOpt = None,
    more: opt.MoreOpt = None,
    png: opt.PngOpt = False,
) -> None:
    """Score every head on each task and write a self-contained HTML report with its data."""
    started = time.perf_counter()
    _check(circuit_edges, knockout_exact, more, from_dir, budget, exhaustive)
    if from_dir:
        folders = [results_folder(folder) for folder in [*from_dir, *(more or [])]]
        run, out = saved_run(folders, out, say)
        page = write_report(run, out, say, pngs=png)  # load_run refused a layout it cannot render
    else:
        chosen = task_list(tasks)  # a typo fails before the model loads
        check_report_folder(out)  # so does an --out that cannot be written
        loaded = load(shared.model)
        options = ReportOptions(
            tasks=chosen or (), n=shared.n, seed=shared.seed, top_heads=top, k=k, embedding=embedding,
            knockout_n=knockout_n, knockout_exact=knockout_exact, circuit_n=circuit_n,
            circuit_edges=circuit_edges,
        )  # fmt: skip
        seconds = None if exhaustive else (budget if budget is not None else DEFAULT_BUDGET)
        found = plan_report(loaded, chosen, options, seconds, say)
        _show_plan(found, shared.model)
        if plan:
            return
        run, page = _run(found, out, png)
    print_table(summary_table(run), title="summary", limit=50)
    for note in not_computed_notes(run):
        say(f"[yellow]{escape(note)}[/yellow]")
    results.print(
        f"report: [bold]{page.resolve()}[/bold]  ({time.perf_counter() - started:.1f} s)", highlight=False
    )


def _check(circuit_edges, knockout_exact, more, from_dir, budget, exhaustive) -> None:
    if circuit_edges is not None and circuit_edges < 1:
        raise HeadscopeError(
            f"--circuit-edges {circuit_edges}: give at least 1 (--circuit-n 0 skips circuits)"
        )
    if knockout_exact is not None and knockout_exact < 0:
        raise HeadscopeError(f"--knockout-exact {knockout_exact}: give 0 or more heads")
    if more and not from_dir:
        raise HeadscopeError(f"unexpected argument {str(more[0])!r}: folders to merge follow --from")
    if budget is not None and (budget <= 0 or exhaustive):
        raise HeadscopeError(f"--budget {budget:g}: give a positive number of seconds, without --exhaustive")


def _show_plan(found: ReportPlan, name: str) -> None:
    threads = torch.get_num_threads()
    model = found.model
    budget = found.options.budget
    say(
        f"model {name}: {model.n_layers} layers x {model.n_heads} heads, on {model.device.type} "
        f"({threads} CPU thread{'s' if threads > 1 else ''}, {found.rate / 1e9:.0f} GFLOP/s measured)"
        + (f", tasks in {found.workers} processes" if found.workers > 1 else "")
        + f"; plan: {found.seconds:.0f} s predicted"
        + (f" for a budget of {budget:g} s" if budget is not None else " (exhaustive)")
        + f", peak {found.peak / 1e9:.1f} GB of {available_bytes() / 1e9:.1f} GB available"
    )
    print_table(found.table(), title="plan", limit=200)


def _run(found: ReportPlan, out: Path, png: bool) -> tuple[Run, Path]:
    """The plan run, with one progress bar over its predicted seconds on a terminal."""
    with plan_progress(sum(phase.seconds for phase in found.phases)) as advance:  # the work, phase by phase
        run = run_plan(found, say, out=out, pngs=png, on_phase=lambda phase: advance(phase.seconds))
    return run, out / PAGE_FILE
