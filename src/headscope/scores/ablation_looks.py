"""Knockouts sampled in looks (docs/methods.md §6, §C): prompts a batch at a time until the order
of the top heads is settled or the prompts given (the cap) run out.

The design, and why:
- The donor values (the corrupted twins' means, or the resampled twins) come from every prompt
  given, once, as a fixed-count run on those prompts takes them: a prompt's knocked-out metric is
  the same at whichever look it runs, and a run stopped at n prompts has on them the very values
  the fixed-count run has on its first n.
- The first-order screen of a large model (`AblationOptions.exact_top`) is not sequential: one
  forward and backward pass per batch over every prompt given (a small share of the exact
  knockouts' cost), so it picks the same heads as the fixed-count run and the heads knocked out
  exactly are fixed before the first look; an estimated head's effect is the screen's over all the
  prompts (its `n`), placed on the table's clean metric.
- The exact knockouts are sequential: at each look only the new prompts run and the per-prompt
  values accumulate; then `sampling.order_rule(top, looks)` reads the exactly knocked-out heads'
  per-prompt effects (knocked out − clean), ranked by size (`sampling.magnitudes`), and stops once
  the `top`-th is told apart from the next (with no more heads knocked out exactly than `top`,
  the rule has nothing to read and the run takes every prompt given). Every interval reported is
  at the rule's Bonferroni level (`Looks.level`), wherever the run stopped: 95% under optional
  stopping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.scores import interventions
from headscope.scores.ablation import (
    AblationOptions,
    Knockouts,
    batch_list,
    donor_for,
    knockout_table,
    position_mask,
    screen,
    screens,
    sites_for,
)
from headscope.scores.interventions import DonorFn, Site, SweepResult
from headscope.scores.sampling import Looks, intervals_at, magnitudes, order_rule, seen
from headscope.tasks.dataset import Dataset

Outcome = Literal["order settled", "cap reached", "nothing to order"]


@dataclass(frozen=True)
class Stop:
    """Where a sequential knockout run stopped: after `prompts` of the `looks.most` given, and why."""

    prompts: int
    looks: Looks
    top: int
    outcome: Outcome

    @property
    def why(self) -> str:
        """'order settled at 16 prompts', 'cap 32 reached, order not settled', ..."""
        if self.outcome == "order settled":
            return f"order of the top {self.top} heads settled at {self.prompts} prompts"
        if self.outcome == "cap reached":
            return f"cap {self.prompts} reached, order of the top {self.top} heads not settled"
        return f"cap {self.prompts} reached, no order to settle (at most {self.top} heads exact)"

    @property
    def ci_kind(self) -> str:
        return f"t, sequential ({len(self.looks.sizes)} looks)"

    def row(self) -> dict:
        """The run's record of the stop (`knockout_stops`)."""
        return {
            "prompts": self.prompts,
            "cap": self.looks.most,
            "looks": ",".join(str(size) for size in self.looks.sizes),
            "level": self.looks.level(),
            "top": self.top,
            "outcome": self.outcome,
            "why": self.why,
        }


def knockouts_in_looks(
    model: Model, dataset: Dataset, options: AblationOptions, looks: Looks, top: int
) -> tuple[Knockouts, Stop, Float[Tensor, "site"]]:
    """`ablation.screened_knockouts` on the first prompts of `dataset` (all of them at most, the
    cap: `looks.most` must be `dataset.n`), run look by look until the order of the `top` heads
    by |effect| is settled. Returns the knockouts on the prompts used, where it stopped, and each
    site's number of prompts (the cap for a screened head's estimate)."""
    if looks.most != dataset.n:
        raise HeadscopeError(f"looks up to {looks.most} prompts on a dataset of {dataset.n}: make them equal")
    sites = sites_for(model, options.components)
    donor = donor_for(model, dataset, options)  # from every prompt given: the same at every look
    screened = _screened(model, dataset, options, sites, donor)
    exact = screened[0] if screened else torch.ones(len(sites), dtype=torch.bool)
    chosen = [sites[i] for i in torch.nonzero(exact).flatten().tolist()]
    heads = [i for i, site in enumerate(chosen) if site.head is not None]
    runs: list[SweepResult] = []
    for start, stop in zip((0, *looks.sizes), looks.sizes, strict=False):
        runs.append(_look(model, dataset.subset(list(range(start, stop))), options, donor, chosen, start))
        outcome = _outcome(runs, heads, top, looks)
        if outcome == "order settled":
            break
    found = _assembled(sites, exact, runs, screened)
    prompts = found.clean_per_prompt.shape[0]
    counts = torch.where(exact, prompts, dataset.n)
    return found, Stop(prompts, looks, top, outcome), counts


def _screened(model: Model, dataset: Dataset, options, sites: list[Site], donor: DonorFn):
    """The screen over every prompt given (exact, estimate, clean it saw), or None without one."""
    if not screens(options, sum(s.head is not None for s in sites)):
        return None
    batches = batch_list(dataset, position_mask(dataset, options.positions), options.batch_size)
    return screen(model, batches, donor, sites, options)


def _look(
    model: Model, chunk: Dataset, options: AblationOptions, donor: DonorFn, sites: list[Site], offset: int
) -> SweepResult:
    """The exact knockouts of `sites` on the look's new prompts (`chunk`, from prompt `offset` on);
    the donor reads them at their place among every prompt given."""
    batches = batch_list(chunk, position_mask(chunk, options.positions), options.batch_size)

    def placed(batch: interventions.Batch) -> interventions.Values:
        return donor(replace(batch, start=batch.start + offset, stop=batch.stop + offset))

    return interventions.sweep_sites_per_prompt(model.bridge, batches, placed, sites)


def _outcome(runs: list[SweepResult], heads: list[int], top: int, looks: Looks) -> Outcome:
    """The rule on every prompt run so far: the heads' effects by size, at the Bonferroni level."""
    if not 1 <= top < len(heads):  # the rule has nothing to read: the run takes the cap
        return "nothing to order"
    per_prompt = torch.cat([run.per_prompt[heads] for run in runs], 1)  # [head, prompt]
    clean = torch.cat([run.clean_per_prompt for run in runs])  # [prompt]
    effects = (per_prompt - clean).T.double().numpy()  # [prompt, head]
    settled = bool(order_rule(top, looks)(magnitudes(seen(effects))))
    return "order settled" if settled else "cap reached"


def _assembled(
    sites: list[Site], exact: Tensor, runs: list[SweepResult], screened: tuple | None
) -> Knockouts:
    """The looks' prompts as one run: exact sites' means over them; a screened head's estimated
    effect (over every prompt given) added to their clean metric."""
    measured = torch.cat([run.per_prompt for run in runs], 1)  # [exact site, prompt]
    clean_per_prompt = torch.cat([run.clean_per_prompt for run in runs])  # [prompt]
    clean = float(clean_per_prompt.double().mean())
    per_prompt = torch.full((len(sites), measured.shape[1]), float("nan"))  # [site, prompt]
    per_prompt[exact] = measured
    metrics = torch.full((len(sites),), float("nan"))
    if screened is not None:
        _, estimate, linear_clean = screened
        metrics = (clean + (estimate.double() - linear_clean)).float()
    metrics[exact] = measured.double().mean(1).float()
    return Knockouts(sites, metrics, clean, exact, per_prompt, clean_per_prompt)


def effect_bounds(found: Knockouts, looks: Looks) -> tuple[np.ndarray, np.ndarray]:
    """Each site's effect interval at the looks' Bonferroni level over the prompts used
    (`sampling.intervals_at`); NaN for a screened head's estimate."""
    effects = (found.per_prompt - found.clean_per_prompt).T.double().numpy()  # [prompt, site]
    used = np.array([effects.shape[0]])
    low, high = intervals_at(effects[None], used, level=looks.level())  # [1, site]
    return low[0], high[0]


def ablate_in_looks(
    model: Model, dataset: Dataset, options: AblationOptions, looks: Looks, top: int
) -> tuple[pd.DataFrame, Stop]:
    """`ablation.ablate`'s table, sampled in looks (`knockouts_in_looks`): `n` the prompts each
    row is over, the effect's interval at the looks' Bonferroni level (`ci_kind` "t, sequential
    (K looks)"; "none" for a screened head's estimate), and where the run stopped."""
    found, stop, counts = knockouts_in_looks(model, dataset, options, looks, top)
    kind = np.where(found.exact.numpy(), stop.ci_kind, "none")
    return knockout_table(found, options, counts.numpy(), effect_bounds(found, looks), kind), stop
