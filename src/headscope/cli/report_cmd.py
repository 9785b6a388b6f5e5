"""`headscope report`: a model and tasks in, a self-contained page plus JSON/CSV (PNGs: --png) out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.markup import escape

from headscope.cli.app import Shared, command, line, print_table, results
from headscope.cli.common import load
from headscope.errors import HeadscopeError
from headscope.report.budget import DEFAULT_BUDGET
from headscope.report.compute import Embedding, ReportOptions
from headscope.report.console import not_computed_notes, plan_progress, summary_table
from headscope.report.html import PAGE_FILE, check_report_folder, write_report
from headscope.report.merge import merge_runs
from headscope.report.plan import ReportPlan, plan_report, run_plan
from headscope.run import RESULTS_FILE, Run, load_run
from headscope.tasks.registry import get_task

DEFAULT_OUT = Path("headscope-report")

TasksOpt = Annotated[
    str | None,
    typer.Option(
        "--tasks",
        "-t",
        help="Comma-separated built-in task names or TOML task files (default: all built-in).",
    ),
]
ReportOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for index.html, results.json, CSVs (and PNGs: --png).")
]
FromOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--from",
        help="Re-render the page from this folder's results.json, without the model; with more folders "
        "(--from DIR1 DIR2 ...), merge runs of the same model on different tasks into one page.",
    ),
]
MoreOpt = Annotated[
    list[Path] | None,
    typer.Argument(
        help="More report folders to merge with the --from one.", metavar="DIR", show_default=False
    ),
]
KOpt = Annotated[int, typer.Option("--k", help="OV scores: a hit when a target is in the top k logits.")]
EmbeddingOpt = Annotated[
    Embedding, typer.Option("--embedding", help="OV scores: context, token or block0 (docs/methods.md §2).")
]
KnockoutOpt = Annotated[
    int, typer.Option("--knockout-n", help="Knock out each head and MLP on this many prompts (0: skip).")
]
KnockoutExactOpt = Annotated[
    int | None,
    typer.Option(
        "--knockout-exact",
        help="Knockouts: every head is first estimated to first order, then this many heads it ranks "
        "highest, the heads the page names and every MLP are knocked out exactly (default: every head "
        "exactly on a model of at most 48 heads, else 16; the model's head count or more: all exact).",
    ),
]
CircuitNOpt = Annotated[
    int | None,
    typer.Option(
        "--circuit-n",
        help="Edge attribution and the circuit on this many prompts (0: skip; default 32 on a model "
        "of at most 2,000 edges, else skipped with a note).",
    ),
]
CircuitEdgesOpt = Annotated[
    int | None,
    typer.Option(
        "--circuit-edges",
        help="Edges in each task's circuit, the top by |exact| (default: the smallest circuit of MIB's "
        "curve whose normalized faithfulness reaches 0.8).",
    ),
]
PngOpt = Annotated[
    bool,
    typer.Option(
        "--png", help="Also draw a PNG twin of each figure (matplotlib) and link it from the page (slower)."
    ),
]
TopOpt = Annotated[
    int,
    typer.Option(
        "--top", help="Top heads per task (by |direct logit attribution|; without DLA, by knockout effect)."
    ),
]


BudgetOpt = Annotated[
    float | None,
    typer.Option(
        "--budget",
        help=f"Seconds the report may take: the plan fits its sample sizes to this "
        f"(default {DEFAULT_BUDGET:g}; what it cannot afford is left out with a note).",
    ),
]
ExhaustiveOpt = Annotated[
    bool, typer.Option("--exhaustive", help="No budget: every sample size as given (--n, --knockout-n, ...).")
]
PlanOpt = Annotated[
    bool, typer.Option("--plan", help="Print the plan (phases, sample sizes, predicted seconds) and stop.")
]


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
    tasks: TasksOpt = None,
    out: ReportOutOpt = DEFAULT_OUT,
    top: TopOpt = 4,
    k: KOpt = 5,
    embedding: EmbeddingOpt = "context",
    knockout_n: KnockoutOpt = 32,
    knockout_exact: KnockoutExactOpt = None,
    circuit_n: CircuitNOpt = None,
    circuit_edges: CircuitEdgesOpt = None,
    budget: BudgetOpt = None,
    exhaustive: ExhaustiveOpt = False,
    plan: PlanOpt = False,
    from_dir: FromOpt = None,
    more: MoreOpt = None,
    png: PngOpt = False,
) -> None:
    """Score every head on each task and write a self-contained HTML report with its data."""
    started = time.perf_counter()
    _check(circuit_edges, knockout_exact, more, from_dir, budget, exhaustive)
    if from_dir:
        folders = [results_folder(folder) for folder in [*from_dir, *(more or [])]]
        run, out = _saved_run(folders, out)
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
        f"({threads} CPU thread{'s' if threads > 1 else ''}, {found.rate / 1e9:.0f} GFLOP/s measured); "
        f"plan: {found.seconds:.0f} s predicted"
        + (f" for a budget of {budget:g} s" if budget is not None else " (exhaustive)")
    )
    print_table(found.table(), title="plan", limit=200)


def _run(found: ReportPlan, out: Path, png: bool) -> tuple[Run, Path]:
    """The plan run, with one progress bar over its predicted seconds on a terminal."""
    with plan_progress(found.seconds) as advance:
        run = run_plan(found, say, out=out, pngs=png, on_phase=lambda phase: advance(phase.seconds))
    return run, out / PAGE_FILE


def results_folder(given: Path) -> Path:
    """The folder --from names: DIR, or DIR/results.json taken as DIR."""
    if given.name == RESULTS_FILE and given.is_file():
        return given.parent
    if given.is_file():
        raise HeadscopeError(f"--from {given} is a file; give the report folder that holds {RESULTS_FILE}")
    return given


def _saved_run(folders: list[Path], out: Path) -> tuple[Run, Path]:
    """The run of one folder (its page goes back there unless --out), or the runs of several merged
    into one (--out required, none of the folders merged)."""
    runs = []
    for folder in folders:
        runs.append(load_run(folder))
        model = runs[-1].model.get("name")
        say(f"loaded {folder / RESULTS_FILE} (model {model}, tasks {', '.join(runs[-1].tasks)})")
    if len(runs) == 1:
        return runs[0], check_report_folder(folders[0] if out == DEFAULT_OUT else out)
    if out == DEFAULT_OUT or any(out.resolve() == folder.resolve() for folder in folders):
        raise HeadscopeError(
            f"--out {out}: give the merged report a folder of its own (--from DIR1 DIR2 ... --out MERGED)"
        )
    merged = merge_runs(runs, [str(folder) for folder in folders])
    say(f"merged {len(runs)} runs: {len(merged.tasks)} tasks")
    return merged, check_report_folder(out)
