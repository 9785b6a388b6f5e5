"""`headscope tasks`: list the tasks, or show a few prompts of one with their positions."""

from __future__ import annotations

import pandas as pd
import typer

from headscope.cli.app import Shared, command, print_table, results
from headscope.cli.common import load, shared_dataset
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


@command("show", task_argument=True, n=3, out=False, on=tasks_app)
def show(shared: Shared) -> None:
    """Print a few prompts of a task, tokenised for a model, with every named position."""
    loaded = load(shared.model)
    dataset = shared_dataset(loaded, shared)
    for i, prompt in enumerate(dataset.prompts):
        results.print(
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
        results.print(f"  corrupted twin: {corrupted!r}")
