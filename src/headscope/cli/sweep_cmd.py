"""`headscope sweep`: the report's analyses on many models or checkpoints, on Ray, in one table and page."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from headscope.cli.app import Shared, command, console, print_table, results
from headscope.errors import HeadscopeError

FLAGS = {
    "models": "--models",
    "models_file": "--models-file",
    "tasks": "--tasks",
    "out": "--out",
    "steps": "--steps",
    "n": "--n",
    "k": "--k",
    "add": "--add",
    "jobs": "--jobs",
    "ray_address": "--ray-address",
}
SUMMARY_COLUMNS = ["name", "step", "status", "seconds", "peak_mb", "error"]


def step_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise HeadscopeError(f"--steps {text}: give whole numbers, one per model (0,100,200)") from error


@command("sweep", out=False, model=False, placement=False)
def sweep_command(
    shared: Shared,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Models or checkpoints, comma-separated: 'organism', local Hugging Face folders (a "
            "pattern like 'ckpt/step-*' expands to its folders) or hub names.",
        ),
    ] = None,
    models_file: Annotated[
        Path | None, typer.Option("--models-file", help="A file of models, one a line (# comments).")
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option("--tasks", "-t", help="Tasks (default: every built-in task each model can spell)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The sweep's folder; rerun with it to resume.")
    ] = Path("headscope-sweep"),
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help="The training step of each model, in order (default: the last whole number in each "
            "folder's name, step-00300 -> 300).",
        ),
    ] = None,
    add: Annotated[
        str | None, typer.Option("--add", help="More analyses for each model: knockouts, circuit.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            help="Models at once (default: what the cores and memory allow); 1: one after another, "
            "without Ray.",
        ),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Run the jobs on this Ray cluster (or 'auto').")
    ] = None,
    pngs: Annotated[bool, typer.Option("--pngs", help="Also draw each run's per-figure PNGs.")] = False,
    k: Annotated[int, typer.Option("--k", help="OV scores: a hit when a target is in the top k.")] = 5,
) -> None:
    """Run the report's analyses on each model (one job each, on Ray) and line the heads up across them."""
    from headscope.sweeps.core import sweep

    started = time.perf_counter()
    try:
        found = sweep(
            models, tasks, out, models_file=models_file, steps=step_list(steps), n=shared.n,
            seed=shared.seed, k=k, add=add or (), jobs=jobs, ray_address=ray_address,
            device=shared.device, dtype=shared.dtype, pngs=pngs, say=_say,
        )  # fmt: skip
    except HeadscopeError as error:
        raise HeadscopeError(error.naming(FLAGS)) from error
    print_table(found.summary[SUMMARY_COLUMNS], title="sweep", limit=50)
    elapsed = time.perf_counter() - started
    results.print(f"sweep: [bold]{found.page.resolve()}[/bold]  ({elapsed:.1f} s)", soft_wrap=True)


def _say(message: str) -> None:
    console.print(
        f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(message)}", highlight=False, soft_wrap=True
    )
