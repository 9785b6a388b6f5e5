"""QK attribution of one head between two roles: its options, checked, and its table
(`headscope.scores.qk_attribution`; docs/methods.md, "QK attribution")."""

from __future__ import annotations

import pandas as pd

from headscope.analyses.record import choice, count
from headscope.errors import HeadscopeError
from headscope.heads import parse_head
from headscope.models.loading import Model
from headscope.scores import qk_attribution as _qk
from headscope.tasks.dataset import Dataset

DEFAULT_BATCH = 16


def _role(value, argument: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HeadscopeError(f"{argument}={value!r}: give a role name of the task, e.g. end or t8")
    return value.strip()


def qk_options(
    model: Model,
    head: str,
    key: str,
    query: str = "end",
    baseline: str = "mean",
    batch_size: int = DEFAULT_BATCH,
) -> _qk.QKOptions:
    """The options, checked: the head exists in the model, the roles are names, the baseline known."""
    if not isinstance(head, str):
        raise HeadscopeError(f"head={head!r}: write the head as LAYER.HEAD, e.g. '2.0'")
    layer, index = parse_head(head, model.n_layers, model.n_heads)
    choice(baseline, "baseline", _qk.BASELINES)
    return _qk.QKOptions(
        layer, index, _role(key, "key"), _role(query, "query"), baseline, count(batch_size, "batch_size")
    )


def qk_attribution(model: Model, dataset: Dataset, options: _qk.QKOptions) -> pd.DataFrame:
    """One row per side (query, key) and upstream component: `side, component, first_order, exact,
    n, ci_low, ci_high` (`qk_attribution.qk_attribution`)."""
    return _qk.qk_attribution(model, dataset, options)
