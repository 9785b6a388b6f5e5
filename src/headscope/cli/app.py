"""The typer app, the options every command shares (declared once, here) and the two consoles.

Results go to stdout (`results`); errors, progress and "wrote FILE" go to stderr (`console`),
so `headscope scores --task ioi > out.txt` keeps only the table in the file. A command
declares its own options and receives the shared ones as one `Shared` value:

    @command("scores", task=None)
    def scores(shared: Shared, k: KOpt = 5) -> None: ...
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from headscope.errors import HeadscopeError
from headscope.models.devices import DType, check_threads, resolve_device
from headscope.models.placement import parse_max_memory, placement
from headscope.tasks.registry import get_task

app = typer.Typer(
    name="headscope",
    help="What does each attention head of a transformer do on a task?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)  # errors, progress, notes
results = Console()  # tables and numbers: what a user pipes or redirects

DEFAULT_MODEL = "organism"
DEFAULT_N = 200
DEFAULT_SEED = 0
DEFAULT_DEVICE = "auto"
MAX_N = 10_000  # at ~1 ms a prompt on the organism and far more on GPT-2; the n of a score past this
SMALL_P = 1e-3  # p-values below this print in scientific notation


@dataclass
class State:
    debug: bool = False
    allow_pickle: bool = False
    shared: Shared | None = None  # the running command's shared options (device, dtype, threads)


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


# ---- the shared options ------------------------------------------------------------------------


def known_task(name: str | None) -> str | None:
    """An option callback: the task must exist (a TOML file parses) before any model loads."""
    if name is not None:
        get_task(name)
    return name


def prompt_count(n: int) -> int:
    """An option callback: --n within 1..MAX_N, refused before the model loads."""
    if n < 1:
        raise HeadscopeError(f"--n {n}: give at least 1 prompt")
    if n > MAX_N:
        raise HeadscopeError(
            f"--n {n} is more than {MAX_N} prompts, which takes many minutes (about 1 ms a prompt on the "
            f"organism, far more on larger models) and adds little: a score's sampling error is "
            f"under 0.01 at {MAX_N}; use --n {MAX_N} or less"
        )
    return n


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="'organism' (bundled, offline), a local Hugging Face directory, or a hub name like gpt2.",
    ),
]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", "-t", help="A built-in task name or a TOML task file.", callback=known_task),
]
TaskArg = Annotated[
    str, typer.Argument(help="A built-in task name or a TOML task file.", callback=known_task)
]
NOpt = Annotated[
    int, typer.Option("--n", help=f"Number of prompts (at most {MAX_N}).", callback=prompt_count)
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the prompt generator.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write the result to this file.")]


def known_device(name: str) -> str:
    """An option callback: the device must exist on this machine before any model loads."""
    try:
        resolve_device(name)
    except HeadscopeError as error:
        raise HeadscopeError(error.naming({"device": "--device"})) from error
    return name


def thread_count(threads: int | None) -> int | None:
    """An option callback: --threads within this machine's cores."""
    try:
        return check_threads(threads)
    except HeadscopeError as error:
        raise HeadscopeError(error.naming({"threads": "--threads"})) from error


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto (the first GPU if any, else the CPU), cpu, cuda, cuda:N or mps.",
        callback=known_device,
    ),
]
DTypeOpt = Annotated[
    DType, typer.Option("--dtype", help="Precision of the model: float32, bfloat16 or float16.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for torch (default: chosen by the model's width).",
        callback=thread_count,
    ),
]


def known_device_map(name: str | None) -> str | None:
    """An option callback: auto, balanced or sequential (the --device clash is checked at load)."""
    try:
        if name is not None:
            placement(device_map=name)
    except HeadscopeError as error:
        raise HeadscopeError(error.naming({"device_map": "--device-map"})) from error
    return name


def known_max_memory(text: str | None) -> str | None:
    """An option callback: DEVICE=SIZE pairs naming devices this machine has."""
    try:
        if text is not None:
            parse_max_memory(text)
    except HeadscopeError as error:
        raise HeadscopeError(error.naming({"max_memory": "--max-memory"})) from error
    return text


DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="Split a model too large for one device: auto, balanced or sequential (accelerate).",
        callback=known_device_map,
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        help="With --device-map: what each device may hold, e.g. 0=20GiB,1=20GiB,cpu=64GiB (the rest: disk).",
        callback=known_max_memory,
    ),
]
OffloadFolderOpt = Annotated[
    Path | None,
    typer.Option("--offload-folder", help="With --device-map: where layers offloaded to disk are kept."),
]

# Python arguments whose CLI option has another name (ov_scores(relations=...) is --relation).
PYTHON_NAMES: dict[str, str] = {"relations": "relation", "spec": "model", "words": "keywords"}


@dataclass(frozen=True)
class Shared:
    """The options every analysis command takes; those a command does not take stay None."""

    model: str = DEFAULT_MODEL
    task: str | None = None
    n: int = DEFAULT_N
    seed: int = DEFAULT_SEED
    out: Path | None = None
    device: str = DEFAULT_DEVICE
    dtype: DType = "float32"
    threads: int | None = None
    device_map: str | None = None
    max_memory: str | None = None
    offload_folder: Path | None = None


NO_TASK = "<no task option>"  # `task=NO_TASK`: the command has no --task (report has --tasks)


def command(
    name: str,
    *,
    task: str | None = NO_TASK,
    n: int = DEFAULT_N,
    out: bool = True,
    task_argument: bool = False,
    prompts: bool = True,
    model: bool = True,
    placement: bool = True,
    on: typer.Typer | None = None,
) -> Callable:
    """Register `func(shared, **own)` as a command with the shared options added to its own.

    `task` is the --task default (None: optional; NO_TASK: no --task), `task_argument` makes the
    task a positional argument, `n` the --n default, `out` whether --out is shared, `prompts`
    whether --n and --seed are (not for a command that reads the weights only), `model` whether
    --model is (not for a command of many models), `placement` whether --threads and the split
    options are (not where each job chooses its own). A
    HeadscopeError naming a Python argument (`k=0: ...`) is re-raised naming the flag (`--k 0: ...`).
    """

    def register(func: Callable) -> Callable:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "shared"]
        shared = _shared_parameters(task, n if prompts else None, out, task_argument)
        left_out = ({"model"} if not model else set()) | (PLACEMENT if not placement else set())
        shared = [p for p in shared if p.name not in left_out]
        first = [p for p in shared if p.name in ("model", "task")]  # --help: model, task, own, n, seed, out
        ordered = [*first, *own, *[p for p in shared if p not in first]]
        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in ordered]
        flags = _flags(parameters)
        shared_names = {p.name for p in shared}

        def run(**values):
            given = Shared(**{key: values.pop(key) for key in list(values) if key in shared_names})
            state.shared = given
            try:
                return func(given, **values)
            except HeadscopeError as error:
                raise HeadscopeError(error.naming(flags)) from error

        run.__signature__ = inspect.Signature(parameters)
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        run.__doc__, run.__name__ = func.__doc__, func.__name__
        (on or app).command(name)(run)
        func.cli_flags = flags  # Python argument -> flag, as errors are rewritten
        return func

    return register


PLACEMENT = {"threads", "device_map", "max_memory", "offload_folder"}


def _shared_parameters(task, n: int | None, out: bool, task_argument: bool) -> list[inspect.Parameter]:
    """The shared options of a command; `n` None: no --n and no --seed (no prompts are built)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    found = [inspect.Parameter("model", keyword, default=DEFAULT_MODEL, annotation=ModelOpt)]
    if task_argument:
        found.append(inspect.Parameter("task", keyword, annotation=TaskArg))
    elif task != NO_TASK:
        found.append(inspect.Parameter("task", keyword, default=task, annotation=TaskOpt))
    if n is not None:
        found.append(inspect.Parameter("n", keyword, default=n, annotation=NOpt))
        found.append(inspect.Parameter("seed", keyword, default=DEFAULT_SEED, annotation=SeedOpt))
    if out:
        found.append(inspect.Parameter("out", keyword, default=None, annotation=OutOpt))
    found.append(inspect.Parameter("device", keyword, default=DEFAULT_DEVICE, annotation=DeviceOpt))
    found.append(inspect.Parameter("dtype", keyword, default="float32", annotation=DTypeOpt))
    found.append(inspect.Parameter("threads", keyword, default=None, annotation=ThreadsOpt))
    found.append(inspect.Parameter("device_map", keyword, default=None, annotation=DeviceMapOpt))
    found.append(inspect.Parameter("max_memory", keyword, default=None, annotation=MaxMemoryOpt))
    found.append(inspect.Parameter("offload_folder", keyword, default=None, annotation=OffloadFolderOpt))
    return found


def _flags(parameters: list[inspect.Parameter]) -> dict[str, str]:
    """Python argument name -> the command's long flag (Python spellings in PYTHON_NAMES too)."""
    flags = {}
    for parameter in parameters:
        metadata = typing.get_args(parameter.annotation)[1:]
        info = next((m for m in metadata if isinstance(m, typer.models.OptionInfo)), None)
        if info is None:
            continue
        declared = [d for d in (info.param_decls or ()) if d.startswith("--")]
        flags[parameter.name] = declared[0] if declared else "--" + parameter.name.replace("_", "-")
    return flags | {python: flags[cli] for python, cli in PYTHON_NAMES.items() if cli in flags}


# ---- output --------------------------------------------------------------------------------------


def working(message: str) -> AbstractContextManager:
    """A spinner on stderr while a step runs (nothing is written when stderr is not a terminal)."""
    return console.status(message)


def line(markup: str) -> None:
    """One line on stderr, rendered first and written in one call: Ctrl-C landing while rich
    writes its buffer made rich write the line a second time before the 'interrupted' line."""
    with console.capture() as captured:
        console.print(markup, highlight=False, soft_wrap=True)  # a long path stays one line
    console.file.write(captured.get())
    console.file.flush()


def wrote(path: Path) -> None:
    line(f"wrote {path}")


def note(message: str) -> None:
    """A warning or remark for the user, on stderr."""
    line(f"[yellow]{message}[/yellow]")


def format_p(p: float) -> str:
    """A p-value: 3 decimals, scientific notation below 0.001 (7.5e-82), never a bare 0.000."""
    if math.isnan(p):
        return "nan"
    if p == 0.0:
        return "<1e-300"  # below the smallest float a p-value is computed to
    return f"{p:.1e}" if p < SMALL_P else f"{p:.3f}"


def is_p_column(name: str) -> bool:
    return name == "p" or name.startswith("p_") or name.endswith("_p")


def print_table(table: pd.DataFrame, title: str | None = None, limit: int = 20) -> None:
    """A DataFrame as a rich table on stdout: the first `limit` rows, floats to 3 places, p-values
    in scientific notation when small."""
    view = Table(title=title, show_lines=False)
    for column in table.columns:
        view.add_column(str(column), justify="right" if table[column].dtype.kind in "fiu" else "left")
    p_columns = [is_p_column(str(column)) for column in table.columns]
    for row in table.head(limit).itertuples(index=False, name=None):  # iterrows upcasts ints to float
        view.add_row(*(_cell(value, is_p) for value, is_p in zip(row, p_columns, strict=True)))
    results.print(view)
    if len(table) > limit:
        results.print(f"[dim]... {len(table) - limit} more rows[/dim]")


def _cell(value, is_p: bool = False) -> str:
    if isinstance(value, float):
        return format_p(value) if is_p else f"{value:.3f}"
    return str(value)
