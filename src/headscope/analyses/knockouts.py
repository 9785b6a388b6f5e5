"""Knockouts: the metric with each component knocked out, and circuits kept or found by pruning."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from headscope.analyses.record import choice, count, integer
from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.options import names
from headscope.scores import ablation as _ablation
from headscope.scores import ablation_looks as _looks
from headscope.scores.interventions import DEFAULT_BATCH
from headscope.scores.sampling import Looks
from headscope.tasks.dataset import Dataset


def ablation_options(
    model: Model,
    dataset: Dataset,
    components: str | Sequence[str] = ("heads", "mlps"),
    method: str = "mean",
    positions: str | Sequence[str] = "all",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    exact_top: int | None = None,
) -> _ablation.AblationOptions:
    """The knockout options, each checked against the model and the task before any pass runs."""
    chosen = names(components, "components", allow_empty=True)
    _ablation.sites_for(model, chosen)  # an unknown component names the choices
    where = names(positions, "positions")
    for position in where:
        if position != "all":
            dataset.role_names(position)  # an unknown role names the task's roles
    choice(method, "method", _ablation.METHODS)
    top = None if exact_top is None else integer(exact_top, "exact_top")
    return _ablation.AblationOptions(chosen, method, where, seed, count(batch_size, "batch_size"), top)


def ablate(model: Model, dataset: Dataset, options: _ablation.AblationOptions) -> pd.DataFrame:
    """One row per component: `component, layer, head, method, metric, pct_of_clean, exact, effect,
    n, ci_low, ci_high, ci_kind`; the clean metric in `.attrs["clean"]`."""
    return _ablation.ablate(model, dataset, options)


def ablate_in_looks(
    model: Model, dataset: Dataset, options: _ablation.AblationOptions, looks: Looks, top: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`ablate` on the first prompts of `dataset` (the cap, `looks.most` of them), look by look
    until the order of the `top` heads by |effect| is settled (docs/methods.md §C): the table as
    `ablate`'s, each row's `n` its prompts and its interval at the looks' Bonferroni level
    (`ci_kind` "t, sequential (K looks)"); and one row saying where it stopped: `prompts, cap,
    looks, level, top, outcome, why`."""
    table, stop = _looks.ablate_in_looks(model, dataset, options, looks, top)
    return table, pd.DataFrame([stop.row()])


def keep_circuit(
    model: Model, dataset: Dataset, keep: Sequence[str], options: _ablation.AblationOptions
) -> pd.DataFrame:
    """One row: `kept` (comma-joined), `metric`, `clean`, `pct_of_clean` with every component but
    `keep` knocked out; the kept components in layer order in `.attrs["components"]`."""
    result = _ablation.keep_circuit(model, dataset, list(keep), options)
    row = {key: result[key] for key in ("metric", "clean", "pct_of_clean")}
    table = pd.DataFrame([{"kept": ",".join(result["keep"]), **row}])
    table.attrs["components"] = result["keep"]
    return table


def greedy_circuit(
    model: Model, dataset: Dataset, options: _ablation.AblationOptions, threshold: float = 1.0
) -> pd.DataFrame:
    """The circuit left after dropping each component (least important first) whose removal costs
    under `threshold` percent points of the clean metric, as `keep_circuit` gives it."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 0:
        raise HeadscopeError(f"threshold={threshold!r}: give percent points, a number >= 0")
    found = _ablation.greedy_circuit(model, dataset, options, float(threshold))
    return keep_circuit(model, dataset, found, options)
