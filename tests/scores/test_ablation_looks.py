"""Knockouts in looks: where the run stops, what it runs at each look, and its values against the
fixed-count run's on the same prompts (coverage of the intervals: tests/scores/test_sampling.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from headscope.errors import HeadscopeError
from headscope.models.loading import load_model
from headscope.scores import ablation_looks, interventions
from headscope.scores.ablation import (
    AblationOptions,
    ablate,
    batch_list,
    donor_for,
    position_mask,
    screened_knockouts,
    sites_for,
)
from headscope.scores.ablation_looks import ablate_in_looks
from headscope.scores.sampling import Looks
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task

CAP = 32
LOOKS = Looks(first=8, batch=8, most=CAP)


@pytest.fixture(scope="module")
def digits(tiny_model):
    return build_dataset(get_task("seq-digits"), tiny_model.tokens, CAP, 0)


def _simulated(monkeypatch, values: np.ndarray, swept: list[tuple[int, int]]) -> None:
    """Knockouts whose per-prompt effects are `values` [prompt, site] (clean 1): the donor hands
    the sweep each batch's place among all the prompts, and the sweep records what it ran."""
    monkeypatch.setattr(
        ablation_looks, "donor_for", lambda model, dataset, options: lambda b: (b.start, b.stop)
    )

    def sweep(bridge, batches, donor, sites):
        rows = torch.zeros(len(sites), sum(b.tokens.shape[0] for b in batches))  # [site, prompt]
        for batch in batches:
            start, stop = donor(batch)
            swept.append((start, stop))
            rows[:, batch.start : batch.stop] = torch.tensor(1 + values[start:stop].T, dtype=torch.float32)
        return interventions.SweepResult(rows.mean(1), 1.0, rows, torch.ones(rows.shape[1]))

    monkeypatch.setattr(interventions, "sweep_sites_per_prompt", sweep)


@pytest.mark.parametrize(
    ("gap", "stopped", "outcome"), [(10.0, 8, "order settled"), (0.0, CAP, "cap reached")], ids=["far", "tie"]
)
def test_a_clear_order_stops_at_the_first_look_and_a_tie_runs_to_the_cap(
    tiny_model, digits, monkeypatch, gap, stopped, outcome
):
    """Head 0.0's effect is -`gap` - 1, head 0.1's -1, the others about 0 (sd 0.5): with the top 1
    head far ahead the first look settles the order; with the two tied it never does."""
    sites = sites_for(tiny_model, ("heads", "mlps"))
    means = np.zeros(len(sites))
    means[:2] = (-gap - 1, -1.0)
    values = np.random.default_rng(0).normal(means, 0.5, (CAP, len(sites)))  # [prompt, site]
    swept: list[tuple[int, int]] = []
    _simulated(monkeypatch, values, swept)
    options = AblationOptions(method="zero", batch_size=4)
    table, stop = ablate_in_looks(tiny_model, digits, options, LOOKS, top=1)
    assert (stop.prompts, stop.outcome) == (stopped, outcome)
    assert swept == [(start, start + 4) for start in range(0, stopped, 4)]  # each prompt run once, in order
    assert (table.n == stopped).all() and (table.ci_kind == "t, sequential (4 looks)").all()
    assert table.effect.to_numpy() == pytest.approx(values[:stopped].mean(0), abs=1e-5)
    assert stop.why == (
        "order of the top 1 heads settled at 8 prompts"
        if gap
        else "cap 32 reached, order of the top 1 heads not settled"
    )
    row = stop.row()
    assert (row["prompts"], row["cap"], row["looks"], row["level"]) == (
        stopped,
        CAP,
        "8,16,24,32",
        1 - 0.05 / 4,
    )


def test_with_no_more_exact_heads_than_the_top_the_run_takes_the_cap(tiny_model, digits, monkeypatch):
    values = np.random.default_rng(1).normal(0, 1, (CAP, tiny_model.n_layers * (tiny_model.n_heads + 1)))
    _simulated(monkeypatch, values, [])
    heads = tiny_model.n_layers * tiny_model.n_heads
    _, stop = ablate_in_looks(tiny_model, digits, AblationOptions(method="zero"), LOOKS, top=heads)
    assert (stop.prompts, stop.outcome) == (CAP, "nothing to order")
    with pytest.raises(HeadscopeError, match="looks up to 16 prompts on a dataset of 32"):
        ablate_in_looks(tiny_model, digits, AblationOptions(), Looks(8, 8, 16), top=1)


@pytest.fixture(scope="module")
def organism_days():
    model = load_model("organism")
    return model, build_dataset(get_task("seq-days"), model.tokens, 200, 0).subset(CAP)


def test_the_values_at_the_stop_are_the_plain_loops_on_those_prompts(organism_days):
    """The organism's successor head 2.1 (effect about -10 on seq-days) is far ahead of the next:
    the top 1 is settled at the first look. The table there is the plain loop's (one hooked pass per
    component, the donor's means over all 32 twins) on the first 8 prompts, its intervals scipy's t
    at the looks' Bonferroni level."""
    model, days = organism_days
    options = AblationOptions()
    table, stop = ablate_in_looks(model, days, options, LOOKS, top=1)
    assert (stop.prompts, stop.outcome) == (8, "order settled")
    batches = batch_list(days, position_mask(days, options.positions), options.batch_size)
    sites = sites_for(model, options.components)
    plain = interventions.reference_sweep_per_prompt(
        model.bridge, batches, donor_for(model, days, options), sites
    )
    differences = (plain.per_prompt - plain.clean_per_prompt)[:, :8].double().numpy()  # [site, prompt]
    assert table.effect.to_numpy() == pytest.approx(differences.mean(1), abs=1e-4)
    assert table.attrs["clean"] == pytest.approx(float(plain.clean_per_prompt[:8].mean()), abs=1e-5)
    for i, row in enumerate(differences):
        if row.std() == 0:  # a component with no effect at all on the organism: a point
            expected = (row.mean(), row.mean())
        else:
            expected = stats.t.interval(LOOKS.level(), 7, loc=row.mean(), scale=stats.sem(row))
        assert (table.ci_low[i], table.ci_high[i]) == pytest.approx(expected, abs=1e-4), table.component[i]


def test_a_run_stopped_early_is_a_fixed_count_run_on_its_prompts(organism_days):
    """With a donor that reads no other prompt (zeros), a run stopped early (at 16 prompts) gives
    the fixed-count table on its prompts; its intervals are wider (Bonferroni over 4 looks)."""
    model, days = organism_days
    options = AblationOptions(method="zero")
    table, stop = ablate_in_looks(model, days, options, LOOKS, top=1)
    assert stop.prompts < CAP
    fixed = ablate(model, days.subset(stop.prompts), options)
    for column in ("metric", "pct_of_clean", "effect"):
        assert table[column].to_numpy() == pytest.approx(fixed[column].to_numpy(), abs=1e-5), column
    wider = (table.ci_high - table.ci_low) >= (fixed.ci_high - fixed.ci_low) - 1e-9
    assert wider.all() and (fixed.ci_kind == "t").all()


def test_screened_heads_are_chosen_as_the_fixed_run_chooses_and_keep_the_screens_estimate(tiny_model, digits):
    options = AblationOptions(method="mean", exact_top=2, exact_heads=((1, 3),), batch_size=4)
    fixed = screened_knockouts(tiny_model, digits, options)
    table, stop = ablate_in_looks(tiny_model, digits, options, LOOKS, top=1)
    assert (table.exact.to_numpy() == fixed.exact.numpy()).all()
    estimated = table[~table.exact]
    assert (
        (estimated.n == CAP).all() and (estimated.ci_kind == "none").all() and estimated.ci_low.isna().all()
    )
    fixed_effect = (fixed.metrics - fixed.clean).double().numpy()[~fixed.exact.numpy()]
    assert estimated.effect.to_numpy() == pytest.approx(fixed_effect, abs=1e-4)  # the screen over all 32
    exact = table[table.exact]
    assert (exact.n == stop.prompts).all() and (exact.ci_kind == "t, sequential (4 looks)").all()
    if stop.prompts == CAP:  # a random model: no order to find; on every prompt, the fixed run's values
        mine = (fixed.metrics - fixed.clean).double().numpy()[fixed.exact.numpy()]
        assert exact.effect.to_numpy() == pytest.approx(mine, abs=1e-4)


def test_a_look_runs_the_new_prompts_with_the_donor_at_their_place(tiny_model, digits):
    """Resampled twins are drawn among all the prompts given: the later looks' prompts must take
    the twins the fixed-count run gives them."""
    options = AblationOptions(method="resample", batch_size=4)
    fixed = screened_knockouts(tiny_model, digits, options)
    found, stop, counts = ablation_looks.knockouts_in_looks(
        tiny_model, digits, options, LOOKS, top=tiny_model.n_layers * tiny_model.n_heads
    )
    assert stop.prompts == CAP and (counts == CAP).all()  # nothing to order: every look runs
    torch.testing.assert_close(found.per_prompt, fixed.per_prompt, atol=1e-4, rtol=0)
