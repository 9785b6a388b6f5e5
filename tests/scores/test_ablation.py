"""Knockouts: the fast sweep against one complete hooked pass per component, and hook semantics."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from headscope.errors import HeadscopeError
from headscope.models.loading import ORGANISM_DIR, load_model
from headscope.scores import resume
from headscope.scores.ablation import (
    AblationOptions,
    ablate,
    greedy_circuit,
    keep_circuit,
    knockout_sweep,
    parse_component,
    position_mask,
    resample_donors,
)
from headscope.scores.ov import ov_scores
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


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
    zero = resume.Values(
        torch.zeros(2, digits.n, tokens.shape[1], 4, 8), torch.zeros(2, digits.n, tokens.shape[1], 32)
    )
    hook = resume.site_hook(resume.Site(1, 2), zero, torch.ones_like(tokens, dtype=torch.bool))
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
    assert list(table.columns) == ["component", "layer", "head", "method", "metric", "pct_of_clean"]
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
    assert parse_component("1.3", tiny_model) == resume.Site(1, 3)
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
