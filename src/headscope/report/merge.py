"""Runs of one model on different tasks, merged into one run: a sweep spread over machines.

Each (model, task set) runs as its own `headscope report --tasks ... --out DIR` job; `merge_runs`
puts their per-task tables together and computes again what spans tasks (the cross-task
comparison, the head card), so the merged page equals the page of one run on the union of the
tasks. Runs that would not give the same numbers side by side are refused in one line naming
the difference: another model (name, weights sha256, shape, precision, device), other options
(n, seed, k, embedding, ...), other package versions; so is a task that two runs both hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from headscope.analyses.fdr import run_fdr
from headscope.errors import HeadscopeError
from headscope.report.selection import compare_tasks, head_card
from headscope.run import Run, plain_record

IDENTITY = ("name", "weights_sha256", "n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx")
IDENTITY += ("dtype", "device")
PER_RUN_OPTIONS = ("tasks", "task_sources", "left_out", "merged_from")  # what may differ, and is joined
ACROSS_TASKS = ("comparison", "head_card")  # computed again from the merged per-task tables
ONCE_PER_MODEL = ("atlas", "atlas_cards", "atlas_relations")  # weights only: the first run's (same model)
VERSIONS_IGNORED = ("python",)  # a Python patch release does not change a number


class MergeError(HeadscopeError):
    """Runs that cannot be shown side by side; the message names the difference."""


def merge_runs(runs: Sequence[Run], names: Sequence[str] | None = None) -> Run:
    """One run holding every task of `runs` (in order), its comparison across all of them.

    Args:
        runs: runs of the same model with the same options, each on its own tasks.
        names: what to call each run in an error (its folder); default run 1, run 2, ...

    Returns:
        The merged `Run`; its options list the tasks of every run and `merged_from` the
        content sha256 and tasks of each.

    Example:
        >>> merged = merge_runs([hs.load_run("ioi-run"), hs.load_run("seq-run")])
    """
    names = list(names) if names is not None else [f"run {i + 1}" for i in range(len(runs))]
    if len(runs) < 2:
        raise MergeError("merging needs at least two runs; give two or more folders after --from")
    first = runs[0]
    for name, run in zip(names[1:], runs[1:], strict=True):
        check_same_numbers(first, run, names[0], name)
    check_distinct_tasks(runs, names)
    tables = run_fdr(_joined_tables(runs))  # the false discovery rate over every test of the union
    tables |= {"comparison": compare_tasks(tables, _all(runs, "tasks")), "head_card": head_card(tables)}
    return Run(
        tables=tables,
        options=_merged_options(runs),
        model=first.model,
        seed=first.seed,
        versions=first.versions,
    )


def check_same_numbers(a: Run, b: Run, a_name: str, b_name: str) -> None:
    """A MergeError naming the first thing that differs between two runs and would change numbers."""
    for key in IDENTITY:
        _same(f"model {key}", a.model.get(key), b.model.get(key), a_name, b_name)
    _same("seed", a.seed, b.seed, a_name, b_name)
    for key in sorted(set(a.options) | set(b.options)):
        if key not in PER_RUN_OPTIONS:
            _same(f"option {key}", a.options.get(key), b.options.get(key), a_name, b_name)
    for key in sorted(set(a.versions) | set(b.versions)):
        if key not in VERSIONS_IGNORED:
            _same(f"{key} version", a.versions.get(key), b.versions.get(key), a_name, b_name)


def _same(what: str, a, b, a_name: str, b_name: str) -> None:
    if a != b:
        raise MergeError(
            f"cannot merge {b_name} into {a_name}: {what} differs ({a!r} vs {b!r}); merge only runs of "
            "the same model with the same options (re-run the odd one out)"
        )


def check_distinct_tasks(runs: Sequence[Run], names: Sequence[str]) -> None:
    """A MergeError naming a task that two runs both hold (which of the two would the page show?)."""
    seen: dict[str, str] = {}
    for name, run in zip(names, runs, strict=True):
        for task in run.tasks:
            if task in seen:
                raise MergeError(
                    f"task {task!r} is in both {seen[task]} and {name}; merge runs of different tasks "
                    "(leave one of the two folders out)"
                )
            seen[task] = name


def _all(runs: Sequence[Run], key: str) -> tuple[str, ...]:
    return tuple(item for run in runs for item in run.options.get(key, ()))


def _joined_tables(runs: Sequence[Run]) -> dict[str, pd.DataFrame]:
    """Each per-task table, the runs' rows one after another (as one run builds them, task by task)."""
    names = dict.fromkeys(name for run in runs for name in run.tables if name not in ACROSS_TASKS)
    joined = {}
    for name in names:
        parts = [run.table(name) for run in runs if not run.table(name).empty]
        parts = parts[:1] if name in ONCE_PER_MODEL else parts
        # a column one run holds only NaN in (a task with no such score) may be stored as objects
        joined[name] = pd.concat(parts, ignore_index=True).infer_objects() if parts else runs[0].table(name)
    return joined


def _merged_options(runs: Sequence[Run]) -> dict:
    left_out = {task: why for run in runs for task, why in (run.options.get("left_out") or {}).items()}
    merged_from = [{"content_sha256": run.content_sha256(), "tasks": list(run.tasks)} for run in runs]
    options = runs[0].options | {
        "tasks": list(_all(runs, "tasks")),
        "task_sources": list(_all(runs, "task_sources")),
        "left_out": {task: why for task, why in left_out.items() if task not in _all(runs, "tasks")},
        "merged_from": merged_from,
    }
    return plain_record({"options": options})["options"]
