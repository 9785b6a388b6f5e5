"""Causal analyses between clean prompts and their corrupted twins: patching and edges."""

from __future__ import annotations

import pandas as pd

from headscope.analyses.record import choice, count
from headscope.models.loading import Model
from headscope.scores import patching as _patching
from headscope.scores.circuit import edges as _edges
from headscope.scores.interventions import DEFAULT_BATCH
from headscope.tasks.dataset import Dataset


def patch(
    model: Model,
    dataset: Dataset,
    direction: str = "denoise",
    by_position: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> pd.DataFrame:
    """Every head's output patched between clean and corrupted runs: `layer, head[, position],
    direction, patched, value`, value = (patched - corrupted) / (clean - corrupted)."""
    choice(direction, "direction", _patching.DIRECTIONS)
    return _patching.patch(model, dataset, direction, bool(by_position), count(batch_size, "batch_size"))


def attribution_patch(model: Model, dataset: Dataset, batch_size: int = DEFAULT_BATCH) -> pd.DataFrame:
    """The first-order estimate of denoising patching for every head and MLP (an approximation)."""
    return _patching.attribution_patch(model, dataset, count(batch_size, "batch_size"))


def edge_options(
    method: str = "eap-ig",
    steps: int = 5,
    exact_top: int | str | None = 50,
    donor: str = "corrupted",
    batch_size: int = 16,
) -> _edges.EdgeOptions:
    """The edge options, checked: `exact_top` "all" (or None) patches every edge exactly."""
    choice(method, "method", _edges.METHODS)
    choice(donor, "donor", _edges.DONORS)
    top = None if exact_top in ("all", None) else count(exact_top, "exact_top", least=0)
    return _edges.EdgeOptions(method, count(steps, "steps"), top, count(batch_size, "batch_size"), donor)


def edge_attribution(
    model: Model, dataset: Dataset, options: _edges.EdgeOptions, curve: bool = False
) -> pd.DataFrame:
    """One row per edge, largest |score| first (`edges.edge_scores`); with `curve`, MIB's
    faithfulness curve of the ranking in `.attrs["curve"]` (`mib.Curve.as_dict()`)."""
    table = _edges.edge_scores(model, dataset, options, progress=False)
    if curve:
        from headscope.scores.circuit.faithfulness import ranking_curve

        table.attrs["curve"] = ranking_curve(
            model, dataset, table, options.donor, options.batch_size
        ).as_dict()
    return table


def circuit_edges(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """The circuit: the top `count` edges by |exact| among those patched exactly (by |score| where
    none was), so an approximation only proposes the candidates."""
    key = table["exact"].abs() if table["exact"].notna().any() else table["score"].abs()
    return table.loc[key.sort_values(ascending=False, na_position="last", kind="stable").index[:count]]
