"""`headscope tasks`: list the tasks, or show a few prompts of one with their positions."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import typer

from headscope.cli.app import (
    DEFAULT_MODEL,
    DEFAULT_SEED,
    ModelOpt,
    SeedOpt,
    console,
    known_task,
    print_table,
)
from headscope.cli.common import dataset_for, load
from headscope.tasks.registry import builtin_tasks

tasks_app = typer.Typer(help="List the built-in tasks, or show prompts of one.", invoke_without_command=True)


@tasks_app.callback()
def list_tasks(ctx: typer.Context) -> None:
    """List the built-in tasks."""
    if ctx.invoked_subcommand is not None:
        return
    rows = [
        {
            "task": t.name,
            "keywords": ",".join(t.keyword_roles),
            "relations": ",".join(t.relations),
            "description": t.description,
        }
        for t in builtin_tasks().values()
    ]
    print_table(pd.DataFrame(rows), title="built-in tasks (or pass a TOML file: see examples/)")


@tasks_app.command("show")
def show(
    task: Annotated[
        str, typer.Argument(help="A built-in task name or a TOML task file.", callback=known_task)
    ],
    model: ModelOpt = DEFAULT_MODEL,
    n: Annotated[int, typer.Option("--n", help="Number of prompts to show.")] = 3,
    seed: SeedOpt = DEFAULT_SEED,
) -> None:
    """Print a few prompts of a task, tokenised for a model, with every named position."""
    loaded = load(model)
    dataset = dataset_for(loaded, task, n, seed)
    for i, prompt in enumerate(dataset.prompts):
        console.print(
            f"[bold]prompt {i}[/bold]: {prompt.text!r} -> "
            f"answer {prompt.answer!r}, contrast {prompt.contrast!r}"
        )
        rows = [
            {
                "role": role,
                "position": int(pos.index[i]),
                "token": loaded.tokens.decode(int(dataset.tokens[i, pos.index[i]])),
            }
            for role, pos in sorted(dataset.roles.items(), key=lambda item: int(item[1].index[i]))
            if pos.present[i]
        ]
        print_table(pd.DataFrame(rows), limit=100)
        corrupted = dataset.corrupted.prompts[i].text if dataset.corrupted else ""
        console.print(f"  corrupted twin: {corrupted!r}")
