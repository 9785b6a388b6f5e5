"""Activation patching per head between the clean prompts and their corrupted twins (docs/methods.md §6).

`denoise`: run the corrupted prompts with one head's `hook_z` taken from the clean run;
`noise`: run the clean prompts with one head's `hook_z` taken from the corrupted run.
Both are normalised to `(patched - corrupted) / (clean - corrupted)` with the mean metrics,
so in `denoise` 1 means the head alone restores the clean metric and 0 that it restores
nothing; in `noise` 0 means the corrupted value of the head alone destroys the clean metric.

`attribution_patch` approximates the denoising numbers of every head and MLP with one
forward and one backward pass (first order in the activation difference); it is labelled
`approximation = True` in every row.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
import torch

from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.scores import interventions
from headscope.scores.interventions import Batch, Site, Values
from headscope.tasks.dataset import Dataset, require_corrupted

Direction = Literal["denoise", "noise"]
DIRECTIONS: tuple[str, ...] = ("denoise", "noise")


def _pair(dataset: Dataset, direction: str) -> tuple[Dataset, Dataset]:
    """(base run, donor run) for a direction; the metric always uses the clean answers."""
    corrupted = require_corrupted(dataset, "patching")
    if direction == "denoise":
        return corrupted, dataset
    if direction == "noise":
        return dataset, corrupted
    raise HeadscopeError(f"direction={direction!r}: choose {', '.join(DIRECTIONS)}")


def _batches(base: Dataset, answers: Dataset, batch_size: int) -> list[Batch]:
    mask = torch.ones_like(base.tokens, dtype=torch.bool)
    return list(
        interventions.batches(base.tokens, base.lengths, answers.answers, answers.contrasts, mask, batch_size)
    )


def _donor(model: Model, donor: Dataset):
    def values(batch: Batch) -> Values:
        return interventions.activations(
            model.bridge, donor.tokens[batch.start : batch.stop, : batch.tokens.shape[1]]
        )

    return values


def run_metric(model: Model, run: Dataset, answers: Dataset, batch_size: int) -> float:
    """Mean logit difference (clean answer - clean contrast) of an unpatched run."""
    total = 0.0
    for batch in _batches(run, answers, batch_size):
        with torch.no_grad():
            logits = model.bridge(batch.tokens.to(model.bridge.cfg.device))
        total += float(interventions.end_metric(interventions.rows_at(logits, batch.end), batch).sum())
    return total / run.n


def _sites(model: Model, dataset: Dataset, by_position: bool) -> list[Site]:
    positions = range(int(dataset.lengths.max())) if by_position else [None]
    return [
        Site(layer, head, position)
        for layer in range(model.n_layers)
        for position in positions
        for head in range(model.n_heads)
    ]


def patch(
    model: Model,
    dataset: Dataset,
    direction: Direction = "denoise",
    by_position: bool = False,
    batch_size: int = interventions.DEFAULT_BATCH,
) -> pd.DataFrame:
    """Normalised patching effect of every head (and token position with `by_position`)."""
    base, donor = _pair(dataset, direction)
    clean = run_metric(model, dataset, dataset, batch_size)
    corrupted = run_metric(model, dataset.corrupted, dataset, batch_size)
    sites = _sites(model, dataset, by_position)
    patched, _ = interventions.sweep_sites(
        model.bridge, _batches(base, dataset, batch_size), _donor(model, donor), sites
    )
    table = pd.DataFrame({"layer": [s.layer for s in sites], "head": [s.head for s in sites]})
    if by_position:
        table.insert(2, "position", [s.position for s in sites])
    table["direction"] = direction
    table["patched"] = patched.double().numpy()
    table["value"] = (table["patched"] - corrupted) / (clean - corrupted)
    table.attrs.update(clean=clean, corrupted=corrupted, direction=direction)
    return table


# ---- attribution patching: a first-order approximation -----------------------------------


def attribution_patch(
    model: Model, dataset: Dataset, batch_size: int = interventions.DEFAULT_BATCH
) -> pd.DataFrame:
    """First-order estimate of the denoising patching value of every head and MLP (an approximation)."""
    base, donor = _pair(dataset, "denoise")
    clean = run_metric(model, dataset, dataset, batch_size)
    sites = [Site(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    sites += [Site(layer, None) for layer in range(model.n_layers)]
    batches = _batches(base, dataset, batch_size)  # the corrupted run, every position
    patched, corrupted = interventions.linear_sweep(model.bridge, batches, _donor(model, donor), sites)
    estimate = (patched.double() - corrupted).numpy()  # the first-order change, mean over prompts
    table = pd.DataFrame(
        {
            "component": [s.name for s in sites],
            "layer": [s.layer for s in sites],
            "head": pd.array([s.head for s in sites], dtype="Int64"),
            "value": estimate / (clean - corrupted),
            "approximation": True,
        }
    )
    table.attrs.update(clean=clean, corrupted=corrupted, direction="denoise", approximation=True)
    return table
