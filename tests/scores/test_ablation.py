"""Knockouts: the fast sweep against one complete hooked pass per component, and hook semantics."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from scipy import stats

from headscope.errors import HeadscopeError
from headscope.models.loading import ORGANISM_DIR, load_model
from headscope.scores import interventions
from headscope.scores.ablation import (
    AblationOptions,
    ablate,
    greedy_circuit,
    keep_circuit,
    knockout_sweep,
    parse_component,
    position_mask,
    resample_donors,
    screened_sweep,
)
from headscope.scores.ov import ov_scores
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.numerics import assert_float_close


@pytest.fixture(scope="module")
def digits(tiny_model):
    return build_dataset(get_task("seq-digits"), tiny_model.tokens, 10, 0)


@pytest.fixture(scope="module")
def ioi(tiny_model):
    return build_dataset(get_task("ioi"), tiny_model.tokens, 10, 0)


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
@pytest.mark.parametrize("positions", [("all",), ("end",)])
def test_fast_sweep_equals_one_full_pass_per_component(tiny_model, digits, method, positions):
    options = AblationOptions(method=method, positions=positions, batch_size=4)  # 3 batches, one short
    sites, fast, clean = knockout_sweep(tiny_model, digits, options, fast=True, progress=False)
    _, plain, plain_clean = knockout_sweep(tiny_model, digits, options, fast=False, progress=False)
    assert len(sites) == tiny_model.n_layers * (tiny_model.n_heads + 1)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    assert clean == pytest.approx(plain_clean, abs=1e-6)
    assert (fast - clean).abs().max() > 1e-4  # the knockouts do change the metric


def test_fast_sweep_on_prompts_of_different_lengths(tiny_model, ioi):
    options = AblationOptions(method="mean", positions=("S2", "end"), batch_size=4)
    assert ioi.lengths.unique().numel() > 1
    _, fast, _ = knockout_sweep(tiny_model, ioi, options, progress=False)
    _, plain, _ = knockout_sweep(tiny_model, ioi, options, fast=False, progress=False)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


def test_zero_ablating_a_head_zeroes_its_z_and_changes_nothing_before(tiny_model, digits):
    bridge, tokens = tiny_model.bridge, digits.tokens
    names = [f"blocks.{layer}.{name}" for layer in range(2) for name in ("hook_resid_pre", "attn.hook_z")]
    _, clean = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    zero = interventions.Values(
        torch.zeros(2, digits.n, tokens.shape[1], 4, 8), torch.zeros(2, digits.n, tokens.shape[1], 32)
    )
    hook = interventions.site_hook(interventions.Site(1, 2), zero, torch.ones_like(tokens, dtype=torch.bool))
    with bridge.hooks(fwd_hooks=[hook]):
        _, ablated = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    z = ablated["blocks.1.attn.hook_z"]
    assert torch.equal(z[:, :, 2], torch.zeros_like(z[:, :, 2]))
    others = [h for h in range(4) if h != 2]
    assert torch.equal(z[:, :, others], clean["blocks.1.attn.hook_z"][:, :, others])
    for name in ("blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"):
        assert torch.equal(ablated[name], clean[name])


def test_ablate_table_columns_and_percent(tiny_model, digits):
    table = ablate(tiny_model, digits, AblationOptions(method="zero", batch_size=5))
    columns = ["component", "layer", "head", "method", "metric", "pct_of_clean", "exact"]
    assert list(table.columns) == [*columns, "effect", "n", "ci_low", "ci_high", "ci_kind"]
    assert table["component"].tolist()[:5] == ["0.0", "0.1", "0.2", "0.3", "1.0"]
    assert table["component"].tolist()[-2:] == ["mlp0", "mlp1"]
    assert table["head"].isna().sum() == 2
    clean = table.attrs["clean"]
    assert table["pct_of_clean"].to_numpy() == pytest.approx(100 * table["metric"].to_numpy() / clean)


def test_position_mask_marks_role_positions(digits):
    mask = position_mask(digits, ("end",))
    assert mask.sum() == digits.n
    assert mask[torch.arange(digits.n), digits.end].all()


def test_resample_donors_share_the_length_and_follow_the_seed(ioi):
    donors = resample_donors(ioi, 3)
    assert torch.equal(ioi.lengths[donors], ioi.lengths)
    assert torch.equal(donors, resample_donors(ioi, 3))


def test_keep_everything_is_clean_and_keep_nothing_equals_a_plain_full_knockout(tiny_model, digits):
    options = AblationOptions(method="zero", batch_size=5)
    everything = [f"{layer}.{head}" for layer in range(2) for head in range(4)] + ["mlp0", "mlp1"]
    kept = keep_circuit(tiny_model, digits, everything, options)
    assert kept["pct_of_clean"] == pytest.approx(100.0)

    # independent: zero every head and MLP output by hand
    def zero(act, hook):
        return torch.zeros_like(act)

    hooks = [(f"blocks.{l}.{n}", zero) for l in range(2) for n in ("attn.hook_z", "hook_mlp_out")]  # noqa: E741
    with torch.no_grad():
        logits = tiny_model.bridge.run_with_hooks(digits.tokens, fwd_hooks=hooks)
    ends = logits[torch.arange(digits.n), digits.end]
    expected = float(
        (ends[torch.arange(digits.n), digits.answers] - ends[torch.arange(digits.n), digits.contrasts]).mean()
    )
    assert keep_circuit(tiny_model, digits, [], options)["metric"] == pytest.approx(expected, abs=1e-5)


def test_greedy_circuit_keeps_the_threshold(tiny_model, digits):
    options = AblationOptions(method="mean", batch_size=10)
    circuit = greedy_circuit(tiny_model, digits, options, threshold=5.0)
    kept = keep_circuit(tiny_model, digits, circuit, options)
    assert all(isinstance(name, str) for name in circuit)
    assert kept["keep"] == circuit
    removed = 2 * (4 + 1) - len(circuit)
    assert kept["pct_of_clean"] > 100 - 5.0 * removed  # each accepted removal cost under 5 points


def test_bad_components_name_the_fix(tiny_model):
    with pytest.raises(HeadscopeError, match="mlp0-mlp1"):
        parse_component("mlp7", tiny_model)
    with pytest.raises(HeadscopeError, match="LAYER.HEAD"):
        parse_component("head3", tiny_model)
    assert parse_component("1.3", tiny_model) == interventions.Site(1, 3)
    with pytest.raises(HeadscopeError, match="heads, mlps"):
        knockout_sweep(tiny_model, None, dataclasses.replace(AblationOptions(), components=("attn",)))


organism_missing = pytest.mark.skipif(
    not (ORGANISM_DIR / "config.json").is_file(), reason="the organism's weights are not installed yet"
)


@pytest.fixture(scope="module")
def organism_digits():
    model = load_model("organism")
    return model, build_dataset(get_task("seq-digits"), model.tokens, 100, 0)


@organism_missing
def test_organism_successor_knockout_hurts_far_more_than_another_head(organism_digits):
    model, dataset = organism_digits
    table = ov_scores(model, dataset).table
    nexts = table[(table.relation == "next") & (table.sign == 1)].set_index(["layer", "head"])["score"]
    layer, head = nexts.idxmax()
    knocked = ablate(model, dataset, AblationOptions(method="mean", components=("heads",)))
    drop = 100.0 - knocked.set_index("component")["pct_of_clean"]  # points of clean lost
    others = drop.drop(f"{layer}.{head}")
    assert drop[f"{layer}.{head}"] > 2 * others.max(), drop.to_dict()  # far more than the next worst
    assert drop[f"{layer}.{head}"] > 5 * others.mean(), drop.to_dict()  # than a random other head


@organism_missing
def test_organism_greedy_circuit_keeps_most_of_clean(organism_digits):
    model, dataset = organism_digits
    options = AblationOptions(method="mean")
    circuit = greedy_circuit(model, dataset, options, threshold=1.0)
    assert keep_circuit(model, dataset, circuit, options)["pct_of_clean"] >= 80.0


# ---- the screen: a first-order estimate, then exact knockouts of the heads it ranks highest --------


def _alpha_derivative(model, dataset, options: AblationOptions, site: interventions.Site) -> float:
    """d metric / d alpha at alpha = 0 with the site set to act + alpha (value - act), by autograd
    through one plain hooked forward pass per batch (summed over prompts)."""
    from headscope.scores.ablation import batch_list, donor_for

    batches = batch_list(dataset, position_mask(dataset, options.positions), options.batch_size)
    donor, total = donor_for(model, dataset, options), 0.0
    for batch in batches:
        values, alpha = donor(batch), torch.zeros((), requires_grad=True)
        mask = batch.mask[:, :, None].float()  # [batch, pos, 1]

        def blend(act, hook, values=values, alpha=alpha, mask=mask):
            if site.head is None:
                return act + alpha * mask * (values.mlp[site.layer] - act)
            out = act.clone()
            value = values.z[site.layer][:, :, site.head]
            out[:, :, site.head] = act[:, :, site.head] + alpha * mask * (value - act[:, :, site.head])
            return out

        name = interventions.mlp_hook(site.layer) if site.head is None else interventions.z_hook(site.layer)
        logits = model.bridge.run_with_hooks(batch.tokens, fwd_hooks=[(name, blend)])
        ends = logits[torch.arange(len(batch.end)), batch.end]
        metric = (ends.gather(1, batch.answers[:, None]) - ends.gather(1, batch.contrasts[:, None])).sum()
        metric.backward()
        total += float(alpha.grad)
    return total


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_linear_estimate_is_the_derivative_along_the_knockout(tiny_model, ioi, method):
    options = AblationOptions(method=method, positions=("S2", "end"), batch_size=4)
    from headscope.scores.ablation import batch_list, donor_for

    batches = batch_list(ioi, position_mask(ioi, options.positions), options.batch_size)
    sites = [
        interventions.Site(0, 1),
        interventions.Site(1, 0),
        interventions.Site(0, None),
        interventions.Site(1, None),
    ]
    estimate, clean = interventions.linear_sweep(
        tiny_model.bridge, batches, donor_for(tiny_model, ioi, options), sites
    )
    _, _, exact_clean = knockout_sweep(tiny_model, ioi, options, progress=False)
    assert clean == pytest.approx(exact_clean, abs=1e-5)
    for i, site in enumerate(sites):
        expected = clean + _alpha_derivative(tiny_model, ioi, options, site) / ioi.n
        assert float(estimate[i]) == pytest.approx(expected, abs=1e-4), site.name
    assert (estimate - clean).abs().max() > 1e-3  # the estimate is not the clean metric


def test_screened_sweep_is_exact_where_it_says_and_the_estimate_elsewhere(tiny_model, digits):
    full = AblationOptions(method="mean", batch_size=4)
    sites, exact_all, clean, flags = screened_sweep(tiny_model, digits, full)
    assert bool(flags.all())
    screened = dataclasses.replace(full, exact_top=2, exact_heads=((1, 3),))
    same_sites, metrics, screened_clean, exact = screened_sweep(tiny_model, digits, screened)
    assert same_sites == sites and screened_clean == clean
    from headscope.scores.ablation import batch_list, donor_for

    batches = batch_list(digits, position_mask(digits, ("all",)), 4)
    estimate, linear_clean = interventions.linear_sweep(
        tiny_model.bridge, batches, donor_for(tiny_model, digits, full), sites
    )
    heads = [i for i, s in enumerate(sites) if s.head is not None]
    top = sorted(heads, key=lambda i: -abs(float(estimate[i]) - linear_clean))[:2]
    named = sites.index(interventions.Site(1, 3))
    mlps = [i for i, s in enumerate(sites) if s.head is None]
    assert sorted(torch.nonzero(exact).flatten().tolist()) == sorted({*top, named, *mlps})
    # the full sweep's numbers; its heads were stacked in other groups, so to float32 rounding
    d = tiny_model.weights.d_model
    assert_float_close(metrics[exact], exact_all[exact], tiny_model.n_layers * 7 * d, "exact knockouts")
    assert torch.equal(metrics[~exact], estimate[~exact])


def test_ablate_marks_estimated_heads(tiny_model, digits):
    table = ablate(tiny_model, digits, AblationOptions(exact_top=1, batch_size=4))
    assert table["exact"].dtype == bool
    assert int((~table["exact"]).sum()) == tiny_model.n_layers * tiny_model.n_heads - 1
    assert table.loc[table["head"].isna(), "exact"].all()  # every MLP exact
    assert ablate(tiny_model, digits, AblationOptions(batch_size=4))["exact"].all()
    estimated = table[~table["exact"]]
    assert (estimated.ci_kind == "none").all() and estimated[["ci_low", "ci_high"]].isna().all().all()
    assert (table.loc[table["exact"], "ci_kind"] == "t").all() and table.ci_low.notna().sum() == 3
    with pytest.raises(HeadscopeError, match="exact_top=-1"):
        AblationOptions(exact_top=-1)


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_knockout_interval_is_the_t_interval_of_the_plain_loops_per_prompt_differences(
    tiny_model, ioi, method
):
    """ci_low/ci_high: scipy's t interval of (knocked out - clean) per prompt, each prompt's metric
    taken from one complete hooked forward pass per component (`reference_sweep_per_prompt`)."""
    from headscope.scores.ablation import batch_list, donor_for, sites_for

    options = AblationOptions(method=method, batch_size=4)
    table = ablate(tiny_model, ioi, options)
    batches = batch_list(ioi, position_mask(ioi, options.positions), options.batch_size)
    plain = interventions.reference_sweep_per_prompt(
        tiny_model.bridge,
        batches,
        donor_for(tiny_model, ioi, options),
        sites_for(tiny_model, options.components),
    )
    differences = (plain.per_prompt - plain.clean_per_prompt).double().numpy()  # [site, prompt]
    assert (table.n == ioi.n).all() and (table.ci_kind == "t").all() and table.attrs["ci_of"] == "effect"
    assert table.effect.to_numpy() == pytest.approx(differences.mean(1), abs=1e-4)
    for i, values in enumerate(differences):
        expected = stats.t.interval(0.95, ioi.n - 1, loc=values.mean(), scale=stats.sem(values))
        assert (table.ci_low[i], table.ci_high[i]) == pytest.approx(expected, abs=1e-4), table.component[i]
    assert (table.ci_low <= table.effect).all() and (table.effect <= table.ci_high).all()
