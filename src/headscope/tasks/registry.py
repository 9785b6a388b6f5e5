"""Find a task by name: a built-in one, or a TOML file of the user's."""

from __future__ import annotations

from pathlib import Path

from headscope.tasks.builtin import builtin_tasks
from headscope.tasks.task import Task, TaskError

__all__ = ["builtin_tasks", "get_task"]


def get_task(name: str) -> Task:
    """A built-in task by name, or a user task from a `.toml` file path.

    Args:
        name: a built-in task (`hs.builtin_tasks()`: "ioi", "seq-digits", ...), optionally with the
            kind of corrupted twin after a colon ("induction:repeat"; `task.twins` lists them), or a
            TOML file path.

    Returns:
        The `Task`; `hs.dataset(model, task, n=200)` builds its prompts for a model.

    Example:
        >>> task = hs.get_task("ioi")
        >>> task.answer_role, task.relations
    """
    tasks = builtin_tasks()
    if name in tasks:
        return tasks[name]
    base, _, twin = name.partition(":")
    if twin and base in tasks:  # "induction:repeat": the task with another kind of corrupted twin
        return tasks[base].with_twin(twin)
    if name.endswith(".toml") or Path(name).is_file():
        from headscope.tasks.toml_task import load_task_file

        return load_task_file(Path(name))
    raise TaskError(f"unknown task {name!r}: choose one of {', '.join(tasks)}, or give a .toml task file")
