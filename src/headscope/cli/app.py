"""The typer app and the options every command shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from headscope.tasks.registry import get_task

app = typer.Typer(
    name="headscope",
    help="What does each attention head of a transformer do on a task?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


@dataclass
class State:
    debug: bool = False
    allow_pickle: bool = False


state = State()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    allow_pickle: Annotated[
        bool,
        typer.Option("--allow-pickle", help="Allow a pickle-only checkpoint (runs code: trust it first)."),
    ] = False,
) -> None:
    state.debug = debug
    state.allow_pickle = allow_pickle


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="'organism' (bundled, offline), a local Hugging Face directory, or a hub name like gpt2.",
    ),
]


def known_task(name: str | None) -> str | None:
    """An option callback: the task must exist (a TOML file parses) before any model loads."""
    if name is not None:
        get_task(name)
    return name


TaskOpt = Annotated[
    str,
    typer.Option("--task", "-t", help="A built-in task name or a TOML task file.", callback=known_task),
]
NOpt = Annotated[int, typer.Option("--n", help="Number of prompts.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the prompt generator.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write the result to this file.")]
AllowPickleOpt = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Allow a pickle checkpoint (runs code: trust it first)."),
]

DEFAULT_MODEL = "organism"
DEFAULT_N = 200
DEFAULT_SEED = 0


def print_table(table: pd.DataFrame, title: str | None = None, limit: int = 20) -> None:
    """A DataFrame as a rich table, the first `limit` rows, floats to 3 places."""
    view = Table(title=title, show_lines=False)
    for column in table.columns:
        view.add_column(str(column), justify="right" if table[column].dtype.kind in "fiu" else "left")
    for row in table.head(limit).itertuples(index=False, name=None):  # iterrows upcasts ints to float
        view.add_row(*(_cell(value) for value in row))
    console.print(view)
    if len(table) > limit:
        console.print(f"[dim]... {len(table) - limit} more rows[/dim]")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
