"""The command line: `headscope COMMAND --help` for each command."""

from __future__ import annotations

import os
import sys
import traceback

import click
import typer
from rich.markup import escape
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from headscope.cli.app import app, console, state
from headscope.cli.tasks_cmd import tasks_app
from headscope.errors import HeadscopeError

app.add_typer(tasks_app, name="tasks")
INTERRUPTED = 130  # the shell's exit status for a process stopped by SIGINT

# Each command module registers itself on `app` when imported.
COMMAND_MODULES: tuple[str, ...] = (
    "report_cmd",
    "scores_cmd",
    "attention_cmd",
    "scatter_cmd",
    "evaluate_cmd",
    "ablate_cmd",
    "patch_cmd",
    "circuit_cmd",
    "qk_cmd",
    "sweep_cmd",
    "atlas_cmd",
    "per_task_cmd",  # the core's per-task analyses with a command of their own (entropy, ...)
)


def _register(argv: list[str] | None = None) -> None:
    """Import the command modules (each registers itself): only the one `argv` names, when it names
    one, so `headscope scores` does not pay for the report's or the scatter's imports."""
    import importlib

    named = _command_module(sys.argv[1:] if argv is None else argv)
    for name in (named,) if named else COMMAND_MODULES:
        importlib.import_module(f"headscope.cli.{name}")


def _command_module(argv: list[str]) -> str | None:
    """The module of the command `argv` names (its first word after the global flags), or None
    (every module: a command of `per_task_cmd` is found that way)."""
    words = [word for word in argv if not word.startswith("-")]
    module = f"{words[0]}_cmd" if words else None
    return module if module in COMMAND_MODULES else None


def quiet_hugging_face() -> None:
    """No Hugging Face progress bars or advisory logs on our stderr (set before transformers loads);
    headscope shows its own progress. A user's explicit setting wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "transformers" in sys.modules:  # already imported (main called in process): switch it off there
        from transformers.utils import logging

        logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input prints one line on stderr and exits 2 (a traceback only with --debug)."""
    quiet_hugging_face()
    _register(argv)
    try:
        code = app(args=argv, prog_name="headscope", standalone_mode=False)
    except HeadscopeError as error:
        return _fail(str(error), 2)
    except (click.exceptions.Exit, typer.Exit) as done:
        return done.exit_code
    except NoArgsIsHelpError as error:
        error.show()
        return error.exit_code
    except (click.ClickException, ClickException) as error:  # typer vendors its own click
        return _fail(_usage_message(error), error.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort, typer.Abort):
        return _interrupted()
    if code == INTERRUPTED:  # typer turns KeyboardInterrupt into Exit(130) and returns its code
        return _interrupted()
    return code if isinstance(code, int) else 0


def _interrupted() -> int:
    return _fail("interrupted: stopped cleanly, earlier outputs are intact", INTERRUPTED)


def _usage_message(error) -> str:
    """Click's message, plus where to read the options when it is a usage error."""
    context = getattr(error, "ctx", None)
    where = f"; see '{context.command_path} --help'" if context is not None else ""
    return error.format_message().rstrip(".") + where


def _fail(message: str, code: int) -> int:
    if state.debug and sys.exc_info()[0] is not None:  # typer hands back Ctrl-C as a code
        traceback.print_exc()
    first = " ".join(message.split())
    console.print(f"[red]error:[/red] {escape(first)}", highlight=False, soft_wrap=True)  # [..] is text
    return code


if __name__ == "__main__":
    sys.exit(main())
