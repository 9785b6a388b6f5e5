"""What every `hs.<name>` shares: the task argument, heads, the frame's `.attrs`, models in memory.

`headscope.api` and `headscope.api_causal` are the notebook front end; this module turns their
arguments into the core's (`headscope.analyses`) and attaches what the result came from.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Iterable, Sequence

import pandas as pd

from headscope.analyses.record import PerTask, count, integer
from headscope.errors import HeadscopeError
from headscope.heads import Head, parse_head
from headscope.models.loading import Model, as_model
from headscope.options import names
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import get_task
from headscope.tasks.task import Task

DEFAULT_N = 200
TaskLike = str | os.PathLike | Task | Dataset
HeadsLike = str | Head | Iterable[str | Head] | None
Names = str | Sequence[str]


class AttachedTable(pd.DataFrame):
    """A table kept in another frame's `.attrs`: shared by the frame's copies, not deep-copied.

    pandas deep-copies `.attrs` on every operation and compares them in `pd.concat`; a plain
    DataFrame there would be copied each time and would make `pd.concat` of two results fail
    ("truth value of a DataFrame is ambiguous"). Everything computed from it is a plain DataFrame.
    """

    def __deepcopy__(self, memo=None) -> AttachedTable:
        return self

    def __eq__(self, other):  # two attached tables are equal when they are the same table
        if isinstance(other, AttachedTable):
            return self is other
        return super().__eq__(other)

    __hash__ = None


# ---- arguments -----------------------------------------------------------------------------


def dataset(model: Model, task: TaskLike, n: int | None = None, seed: int = 0) -> Dataset:
    """The prompts of `task` tokenised for `model` (a Dataset given is returned as it is).

    Args:
        model: from `hs.load_model`.
        task: a built-in task name, a `Task`, a TOML task file path, or a `Dataset`.
        n: prompts to generate (default 200); not with a built `Dataset`.
        seed: seed of the prompt generator.

    Returns:
        The `Dataset` (`len(data)` prompts; pairs whose fillers are not one token each are
        dropped, with a warning).

    Example:
        >>> data = hs.dataset(model, "ioi", n=20)
        >>> len(data), data.prompts[0].text
    """
    if isinstance(task, Dataset):
        if n is not None and n != task.n:
            raise HeadscopeError(
                f"n={n} with a built Dataset of {task.n} prompts: drop n, or pass the task name to build {n}"
            )
        return task
    prompts = count(DEFAULT_N if n is None else n, "n")
    spec = _task(task)
    built = build_dataset(spec, model.tokens, prompts, integer(seed, "seed"))
    if built.dropped:
        warnings.warn(
            f"task {spec.name}: {built.dropped} of {prompts} prompts dropped (a filler is not one token "
            "for this tokenizer)",
            stacklevel=3,
        )
    return built


def _task(task) -> Task:
    if isinstance(task, Task):
        return task
    if isinstance(task, str | os.PathLike):
        return get_task(os.fspath(task))
    raise HeadscopeError(f"task={task!r}: give a task name ('ioi'), a Task, a .toml file path or a Dataset")


def heads_of(model: Model, heads: HeadsLike) -> tuple[Head, ...] | None:
    """None (every head) for None or 'all'; else (layer, head) pairs from '9.1,8.8', (9, 1) or a list."""
    if heads is None or heads == "all":
        return None
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]
    items = names(heads, "heads") if isinstance(heads, str) else list(heads)
    found = [one_head(model, item) for item in items]
    if not found:
        raise HeadscopeError("heads=[] is empty: give heads like '9.1,8.8', (9, 1) or 'all'")
    return tuple(dict.fromkeys(found))


def one_head(model: Model, item) -> Head:
    text = (
        item if isinstance(item, str) else ".".join(str(x) for x in item) if isinstance(item, tuple) else ""
    )
    if not text:
        raise HeadscopeError(f"heads: {item!r} is not a head; write '9.1' or (9, 1)")
    return parse_head(text, model.n_layers, model.n_heads)


def attach(frame: pd.DataFrame, model: Model, data: Dataset, **extras) -> pd.DataFrame:
    """`frame` with the task, n, model shape and `extras` (tables kept as AttachedTable) in attrs."""
    frame.attrs.update(task=data.task.name, n=data.n, model=model.identity.name)
    frame.attrs.update(n_layers=model.n_layers, n_heads=model.n_heads)
    for key, value in extras.items():
        frame.attrs[key] = AttachedTable(value) if isinstance(value, pd.DataFrame) else value
    return frame


def per_task(analysis: PerTask):
    """`hs.<analysis.name>(model, task, n=None, seed=0)`: the analysis on the task's prompts."""

    def run(model: Model, task: TaskLike, n: int | None = None, seed: int = 0) -> pd.DataFrame:
        data = dataset(model, task, n, seed)
        return attach(analysis.run(model, data), model, data)

    run.__name__ = run.__qualname__ = analysis.name
    run.__doc__ = analysis.doc
    return run


def _taking_models_in_memory(analysis):
    """`analysis` with its `model` argument passed through `as_model` first."""

    @functools.wraps(analysis)
    def taking(model, *args, **kwargs):
        return analysis(as_model(model), *args, **kwargs)

    return taking


def _takes_model(value) -> bool:
    return inspect.isfunction(value) and next(iter(inspect.signature(value).parameters), None) == "model"


def take_models_in_memory(namespace: dict, exported: list[str]) -> None:
    """Each function of `exported` in `namespace` whose first argument is `model` rebound to accept a
    model in memory: one place turns every analysis's `model` into a Model (`as_model`)."""
    for name in [name for name in exported if _takes_model(namespace[name])]:
        namespace[name] = _taking_models_in_memory(namespace[name])
