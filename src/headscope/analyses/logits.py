"""Analyses of the logits at `end`: evaluation, direct logit attribution, one head's scatter."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from headscope.analyses.record import PerTask, captured, choice, count, union
from headscope.capture import Capture
from headscope.errors import HeadscopeError
from headscope.heads import Head
from headscope.models.loading import Model
from headscope.scores import direct_logit as _direct_logit
from headscope.scores import evaluate as _evaluate
from headscope.scores import scatter as _scatter
from headscope.tasks.dataset import Dataset


def _evaluation(model: Model, dataset: Dataset, taken: Capture) -> pd.DataFrame:
    return pd.DataFrame([{**_evaluate.evaluate(dataset, taken), "dropped": dataset.dropped}])


EVALUATION = PerTask(
    name="evaluation",
    needs=_evaluate.EVALUATE_NEEDS,
    compute=_evaluation,
    doc="""How well the model does the task: one row of accuracy, logit_diff, answer_prob, n, dropped.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        One row: `accuracy` (the answer is the top-1 token at `end`), `logit_diff` (mean answer -
        contrast logit), `answer_prob` (mean probability of the answer), `n`, each one's 95%
        interval (`accuracy_ci_low`, `accuracy_ci_high`, ...: docs/methods.md §C), `dropped`.

    Example:
        >>> hs.evaluate(model, "ioi", n=50)
    """,
)

DLA_NEEDS = union(_direct_logit.DLA_NEEDS, _evaluate.EVALUATE_NEEDS)  # the sum and what it adds up to


def dla_refusal(model: Model) -> str | None:
    """Why the logit difference is no sum of component terms on this architecture, or None."""
    return model.arch.dla_refusal if model.arch is not None else None


def direct_logit_attribution(model: Model, dataset: Dataset, taken: Capture | None = None) -> pd.DataFrame:
    """Each component's mean direct contribution to the logit difference: `component, kind, layer,
    head, dla, convention, n, ci_low, ci_high, ci_kind` (a HeadscopeError where the
    architecture has no such sum: `dla_refusal`)."""
    taken = captured(model, dataset, DLA_NEEDS, taken)
    return _direct_logit.direct_logit_attribution(model.weights, dataset, taken)


SCALES: tuple[str, ...] = ("none", "ln_final")
SCATTER_NEEDS = _scatter.SCATTER_NEEDS


def scatter_roles(dataset: Dataset, roles: Sequence[str] | None) -> list[str]:
    """The roles asked for, each checked against the task, or the task's default (the answer role
    and the group holding the contrast role); an error names the roles to pass where it has none."""
    if roles is not None:
        for role in roles:
            dataset.role_names(role)  # an unknown role names the task's roles
        return list(roles)
    task = dataset.task
    if task.answer_role is None and task.contrast_role is None:
        raise HeadscopeError(
            f"roles=None: task {task.name} has no answer or contrast role in its prompts: pass roles=, "
            f"e.g. {','.join(task.keyword_roles[:2])!r}"
        )
    return _scatter.default_roles(dataset)


def scatter(
    model: Model,
    dataset: Dataset,
    head: Head,
    roles: Sequence[str],
    scale: str = "none",
    n_boot: int = 1000,
    seed: int = 0,
    taken: Capture | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One head's points (attention to each role's token vs. its output along it) and their
    statistics (Pearson r, p, n, the bootstrap interval drawn with `seed`), per role and pooled."""
    choice(scale, "scale", SCALES)
    count(n_boot, "n_boot")
    taken = captured(model, dataset, SCATTER_NEEDS, taken)
    points = _scatter.scatter_points(model.weights, dataset, taken, head, list(roles), scale)
    return points, _scatter.scatter_stats(points, n_boot=n_boot, seed=seed)
