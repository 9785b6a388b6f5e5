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
from headscope.models.loading import Model
from headscope.report.compute import Embedding, ReportOptions, build_run, doable_tasks
from headscope.report.console import not_computed_notes, summary_table
from headscope.report.html import check_report_folder, write_report
from headscope.report.merge import merge_runs
from headscope.run import RESULTS_FILE, Run, load_run
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
    int, typer.Option("--circuit-edges", help="Edges in each task's circuit (the top by |exact|).")
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
    circuit_edges: CircuitEdgesOpt = 10,
    from_dir: FromOpt = None,
    more: MoreOpt = None,
    png: PngOpt = False,
) -> None:
    """Score every head on each task and write a self-contained HTML report with its data."""
    started = time.perf_counter()
    if circuit_edges < 1:
        raise HeadscopeError(
            f"--circuit-edges {circuit_edges}: give at least 1 (--circuit-n 0 skips circuits)"
        )
    if knockout_exact is not None and knockout_exact < 0:
        raise HeadscopeError(f"--knockout-exact {knockout_exact}: give 0 or more heads")
    if more and not from_dir:
        raise HeadscopeError(f"unexpected argument {str(more[0])!r}: folders to merge follow --from")
    if from_dir:
        folders = [results_folder(folder) for folder in [*from_dir, *(more or [])]]
        run, out = _saved_run(folders, out)
        page = _render_saved(run, out, png)
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
            knockout_exact=knockout_exact,
            circuit_n=circuit_n,
            circuit_edges=circuit_edges,
            left_out=left_out,
        )
        threads = torch.get_num_threads()
        say(
            f"model {shared.model}: {loaded.n_layers} layers x {loaded.n_heads} heads, on "
            f"{loaded.device.type} ({threads} CPU thread{'s' if threads > 1 else ''})"
        )
        run = build_run(loaded, [get_task(name) for name in names], options, say)
        page = write_report(run, out, say, pngs=png)
    print_table(summary_table(run), title="summary", limit=50)
    for note in not_computed_notes(run):
        say(f"[yellow]{escape(note)}[/yellow]")
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


def _render_saved(run: Run, out: Path, pngs: bool = False) -> Path:
    """The page of a loaded run (`load_run` has refused one this version cannot render, naming
    the table and column it lacks: headscope.run_tables)."""
    return write_report(run, out, say, pngs=pngs)
