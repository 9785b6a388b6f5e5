"""The record of an analysis of one capture, and the checks every front end shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import pandas as pd

from headscope.capture import Capture, Needs, capture
from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.tasks.dataset import Dataset
from headscope.tasks.task import Task


def every_task(task: Task) -> bool:
    return True


def keeps_patterns(task: Task) -> bool:
    """Whole attention patterns are worth capturing on this task (`Task.keep_patterns`)."""
    return task.keep_patterns


@dataclass(frozen=True)
class PerTask:
    """An analysis of one capture with no options of its own: a table per head or component.

    `name` is `hs.<name>`; `table` its table in a report's Run (default: `name`); `command` is
    `headscope <command>` where it has a command of its own; `needs` what it reads from a capture;
    `compute(model, dataset, capture)` makes the table; `applies(task)` says on which tasks the
    report (and the labels) run it; `doc` is `hs.<name>`'s docstring (Args, Returns, Example), its
    first line the command's help.
    """

    name: str
    needs: Needs
    compute: Callable[[Model, Dataset, Capture], pd.DataFrame]
    doc: str
    applies: Callable[[Task], bool] = every_task
    table: str = ""
    command: str = ""  # "": no command of its own (another command shows it)

    @property
    def table_name(self) -> str:
        return self.table or self.name

    def run(self, model: Model, dataset: Dataset, taken: Capture | None = None) -> pd.DataFrame:
        """The table on `dataset`, from `taken` when given (it must hold `needs`), else one capture."""
        return self.compute(model, dataset, captured(model, dataset, self.needs, taken))


def captured(model: Model, dataset: Dataset, needs: Needs, taken: Capture | None = None) -> Capture:
    """`taken` when a caller shares one capture between analyses, else a capture of `needs`."""
    return taken if taken is not None else capture(model, dataset, needs)


def union(*needs: Needs) -> Needs:
    """What a capture must keep for all of `needs` (the logits when any asks for them)."""
    return Needs(**{f.name: any(getattr(n, f.name) for n in needs) for f in fields(Needs)})


def integer(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeadscopeError(f"{argument}={value!r}: give a whole number")
    return value


def count(value, argument: str, least: int = 1) -> int:
    if integer(value, argument) < least:
        raise HeadscopeError(f"{argument}={value}: give at least {least}")
    return value


def choice(value, argument: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise HeadscopeError(f"{argument}={value!r}: choose one of {', '.join(map(repr, choices))}")
    return value
