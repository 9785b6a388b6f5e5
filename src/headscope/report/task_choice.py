"""Which tasks a report runs when none are named: the inclusion rule of docs/methods.md §A, once.

A built-in task enters when the model's tokenizer spells it (every prompt word one token) and the
model does it better than chance on its first `CHECK_PROMPTS` prompts (`at_chance`). The rule's
own words (`RULE`) are recorded in the run, so the page states the rule the run used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from headscope.capture import Needs, capture
from headscope.models.loading import Model
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import builtin_tasks
from headscope.tasks.task import Task

CHANCE_MARGIN = 0.1  # the answer beating the contrast on at most 1/2 + this share of prompts is chance
CHECK_PROMPTS = 32
RULE = (
    f"A task enters the default run when the model's tokenizer spells it and the model does it better "
    f"than chance on its first {CHECK_PROMPTS} prompts: the mean logit difference (answer - contrast at "
    f"the end) is larger on the clean prompts than on their corrupted twins, and the answer beats the "
    f"contrast on more than {0.5 + CHANCE_MARGIN:.2f} of them. Name a task in --tasks to include it."
)


def default_tasks(
    model: Model, seed: int = 0, say: Callable[[str], None] = print
) -> tuple[list[Task], tuple[tuple[str, str], ...]]:
    """The built-in tasks the tokenizer spells and the model does (`doable_tasks`), and each
    task it does not do with why it is left out (a task it cannot spell is only said)."""
    spelled = []
    for name, task in builtin_tasks().items():
        why = spelling_error(model, task)
        if why is not None:
            say(f"skipping task {name}: {why}")
        else:
            spelled.append(task)
    kept, left_out = doable_tasks(model, spelled, seed)
    for name, why in left_out:
        say(f"leaving out task {name}: {why} (name it in --tasks to include it)")
    return kept, tuple(left_out)


def spelled_tasks(model: Model) -> list[Task]:
    """The built-in tasks this model's tokenizer can spell (every prompt word one token)."""
    return [task for task in builtin_tasks().values() if spelling_error(model, task) is None]


def spelling_error(model: Model, task: Task) -> str | None:
    """Why the tokenizer cannot spell the task's prompts, or None."""
    try:
        build_dataset(task, model.tokens, 2, 0)
    except ValueError as error:  # TaskError, or a generator's pool that is too small
        return " ".join(str(error).split())
    return None


def doable_tasks(
    model: Model, tasks: Sequence[Task], seed: int = 0, margin: float = CHANCE_MARGIN
) -> tuple[list[Task], list[tuple[str, str]]]:
    """The tasks the model does better than chance on the first 32 prompts, and each other task
    with why it is left out (`at_chance`): a report on a task the model cannot do shows only noise
    (the organism was never trained on seq-letters). A task the model does imperfectly stays: a
    135M model answers induction's top-1 less than half the time while its induction heads score
    0.61, and those heads are what a reader looks for."""
    kept, left_out = [], []
    for task in tasks:
        dataset = build_dataset(task, model.tokens, CHECK_PROMPTS, seed)
        why = at_chance(model, dataset, margin)
        if why is None:
            kept.append(task)
        else:
            left_out.append((task.name, why))
    return kept, left_out


def at_chance(model: Model, dataset: Dataset, margin: float = CHANCE_MARGIN) -> str | None:
    """Why the model is at chance on the dataset, or None: its mean logit difference (answer -
    contrast at the end) is no larger on the clean prompts than on their corrupted twins (with the
    clean answers), or the answer beats the contrast (the candidate pair: chance 1/2) on at most
    1/2 + `margin` of the prompts."""
    from headscope.scores import metric

    def diffs(data: Dataset):  # [batch]
        logits = capture(model, data, Needs(logits_end=True)).logits_end
        return metric.logit_diff(logits, dataset.answers, dataset.contrasts)

    clean = diffs(dataset)
    if dataset.corrupted is not None:
        twin = float(diffs(dataset.corrupted).mean())
        if float(clean.mean()) <= twin:
            return (
                f"logit difference {float(clean.mean()):.2f} no larger than on the corrupted twins "
                f"({twin:.2f}) on {dataset.n} prompts"
            )
    wins = float((clean > 0).float().mean())
    if wins <= 0.5 + margin:
        return f"the answer beats the contrast on {wins:.2f} of {dataset.n} prompts (chance 0.50)"
    return None
