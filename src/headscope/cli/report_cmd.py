"""`headscope report`: a model and tasks in, a self-contained page plus JSON/CSV/PNG out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from headscope.cli.app import Shared, command, console, print_table, results
from headscope.cli.common import load
from headscope.errors import HeadscopeError
from headscope.models.checks import first_line
from headscope.models.loading import Model
from headscope.report.analyses import Embedding, ReportOptions, build_run, doable_tasks
from headscope.report.console import summary_table
from headscope.report.html import check_report_folder, write_report
from headscope.run import RESULTS_FILE, load_run
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import builtin_tasks, get_task

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
    Path, typer.Option("--out", "-o", help="Folder for index.html, results.json, CSVs and PNGs.")
]
FromOpt = Annotated[
    Path | None,
    typer.Option("--from", help="Re-render the page from this folder's results.json, without the model."),
]
KOpt = Annotated[int, typer.Option("--k", help="OV scores: a hit when a target is in the top k logits.")]
EmbeddingOpt = Annotated[
    Embedding, typer.Option("--embedding", help="OV scores: context, token or block0 (methods.md section 2).")
]
KnockoutOpt = Annotated[
    int, typer.Option("--knockout-n", help="Knock out each head and MLP on this many prompts (0: skip).")
]
TopOpt = Annotated[int, typer.Option("--top", help="Top heads per task (by |direct logit attribution|).")]


def task_list(text: str | None) -> tuple[str, ...]:
    """The tasks named (each checked now, so a typo fails before the model loads)."""
    if text is None:
        return tuple(builtin_tasks())
    names = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not names:
        raise HeadscopeError("empty --tasks: give task names like ioi,seq-digits, or leave it out for all")
    for name in names:
        get_task(name)
    return names


def runnable_tasks(model: Model, seed: int = 0) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The built-in tasks this model's tokenizer can spell and the model can do (`doable_tasks`);
    the others are named, and those it cannot do are returned with why, for the page."""
    spelled = []
    for name, task in builtin_tasks().items():
        try:
            build_dataset(task, model.tokens, 2, 0)
        except ValueError as error:  # TaskError, or a generator's pool that is too small
            say(f"[yellow]skipping task {name}: {' '.join(str(error).split())}[/yellow]")
            continue
        spelled.append(task)
    kept, left_out = doable_tasks(model, spelled, seed)
    for name, why in left_out:
        say(f"[yellow]leaving out task {name}: {why} (name it in --tasks to include it)[/yellow]")
    return tuple(task.name for task in kept), tuple(left_out)


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


@command("report", out=False)
def report(
    shared: Shared,
    tasks: TasksOpt = None,
    out: ReportOutOpt = DEFAULT_OUT,
    top: TopOpt = 4,
    k: KOpt = 5,
    embedding: EmbeddingOpt = "context",
    knockout_n: KnockoutOpt = 32,
    from_dir: FromOpt = None,
) -> None:
    """Score every head on each task and write a self-contained HTML report with its data."""
    started = time.perf_counter()
    if from_dir is not None:
        from_dir = results_folder(from_dir)
        run = load_run(from_dir)
        say(f"loaded {from_dir / RESULTS_FILE} (model {run.model.get('name')}, {len(run.tasks)} tasks)")
        out = check_report_folder(from_dir if out == DEFAULT_OUT else out)
        page = _render_saved(run, out, from_dir)
    else:
        chosen = task_list(tasks) if tasks is not None else None  # a typo fails before the model loads
        check_report_folder(out)  # so does an --out that cannot be written
        loaded = load(shared.model)
        names, left_out = (chosen, ()) if chosen is not None else runnable_tasks(loaded, shared.seed)
        options = ReportOptions(
            tasks=names,
            n=shared.n,
            seed=shared.seed,
            top_heads=top,
            k=k,
            embedding=embedding,
            knockout_n=knockout_n,
            left_out=left_out,
        )
        say(f"model {shared.model}: {loaded.n_layers} layers x {loaded.n_heads} heads")
        run = build_run(loaded, [get_task(name) for name in names], options, say)
        page = write_report(run, out, say)
    print_table(summary_table(run), title="summary", limit=50)
    results.print(
        f"report: [bold]{page.resolve()}[/bold]  ({time.perf_counter() - started:.1f} s)", highlight=False
    )


def results_folder(given: Path) -> Path:
    """The folder --from names: DIR, or DIR/results.json taken as DIR."""
    if given.name == RESULTS_FILE and given.is_file():
        return given.parent
    if given.is_file():
        raise HeadscopeError(f"--from {given} is a file; give the report folder that holds {RESULTS_FILE}")
    return given


def _render_saved(run, out: Path, from_dir: Path) -> Path:
    """The page of a loaded run. A results.json this version cannot render (a table lacks a column
    it reads: KeyError 'layer', ...) is from an older headscope: say so, and how to rebuild it."""
    try:
        return write_report(run, out, say)
    except HeadscopeError:
        raise
    except (KeyError, AttributeError, IndexError, TypeError, ValueError) as error:
        raise HeadscopeError(
            f"{from_dir / RESULTS_FILE} does not fit this headscope's layout ({type(error).__name__}: "
            f"{first_line(error)}), so it is from an older version; re-run it: "
            f"headscope report --out {from_dir} (with its --model and --tasks)"
        ) from error
