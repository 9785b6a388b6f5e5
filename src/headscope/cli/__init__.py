"""The command line: `headscope COMMAND --help` for each command."""

from __future__ import annotations

import sys
import traceback

import click

from headscope.cli.app import app, console, state
from headscope.cli.tasks_cmd import tasks_app
from headscope.errors import HeadscopeError

app.add_typer(tasks_app, name="tasks")

# Each command module registers itself on `app` when imported.
COMMAND_MODULES: tuple[str, ...] = (
    "report_cmd",
    "scores_cmd",
    "attention_cmd",
    "scatter_cmd",
    "evaluate_cmd",
    "ablate_cmd",
    "patch_cmd",
)


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"headscope.cli.{name}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input prints one line and exits 2 (a traceback only with --debug)."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except HeadscopeError as error:
        return _fail(str(error), 2)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        return _fail(error.format_message(), error.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        return _fail("interrupted: stopped cleanly, earlier outputs are intact", 130)
    return 0


def _fail(message: str, code: int) -> int:
    if state.debug:
        traceback.print_exc()
    first = " ".join(message.split())
    console.print(f"[red]error:[/red] {first}", highlight=False, soft_wrap=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
