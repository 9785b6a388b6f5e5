"""Edge scores against independent computations, on a sequential (GPT-2) and a parallel-block,
grouped-query model (Falcon's new decoder architecture, 4 query heads sharing 2 key/value groups).

- `exact` equals a plain implementation: the target input rebuilt from the cached per-source
  contributions (embedding, z @ W_O per head, MLP outputs, output biases) with the one source
  taken from the corrupted run, fed to the model through plain hooks in complete forward passes;
- `eap` equals the gradient of the metric with respect to each target input (autograd through a
  complete forward pass in which only that input is a free variable), times the source's
  corrupted - clean difference;
- the layered forward with zero offsets is the model's own forward.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import headscope as hs
from headscope.models.loading import load_model
from headscope.scores.circuit import edges as E
from headscope.scores.circuit import graph
from headscope.scores.circuit.graph import Edge
from tests.models.families import _FALCON, BY_NAME, save_family

FALCON_GQA = dataclasses.replace(
    BY_NAME["falcon"],
    name="falcon-gqa",
    label="Falcon (parallel, grouped-query)",
    config_kwargs=_FALCON | dict(new_decoder_architecture=True, num_kv_heads=2, multi_query=False),
)
FAMILIES = {"gpt2": BY_NAME["gpt2"], "falcon-gqa": FALCON_GQA}


@pytest.fixture(scope="module", params=list(FAMILIES))
def model(request, tmp_path_factory):
    return load_model(str(save_family(FAMILIES[request.param], tmp_path_factory.mktemp(request.param))))


@pytest.fixture(scope="module")
def data(model):
    return hs.dataset(model, "seq-digits", n=5, seed=3)


def test_the_two_models_are_what_the_tests_claim(model):
    if model.arch.parallel:
        assert model.arch.n_kv_heads == 2 and model.arch.n_heads == 4
    else:
        assert model.arch.n_kv_heads == model.arch.n_heads


# ---- the plain reference ------------------------------------------------------------------------


def _caches(model, data):
    bridge = model.bridge
    with torch.no_grad():
        _, clean = bridge.run_with_cache(data.tokens)
        _, corrupt = bridge.run_with_cache(data.corrupted.tokens)
    return clean, corrupt


def _contribution(model, cache, source) -> torch.Tensor:
    if source.kind == "embed":
        return cache["blocks.0.hook_resid_pre"]
    if source.kind == "mlp":
        return cache[f"blocks.{source.layer}.hook_mlp_out"]
    z = cache[f"blocks.{source.layer}.attn.hook_z"][:, :, source.index]
    return z @ model.weights.W_O[source.layer, source.index]


def _rebuilt(model, clean, corrupt, edge: Edge, patch: bool = True) -> torch.Tensor:
    """The target's residual input as the sum of every source feeding it plus the output biases."""
    arch, target = model.arch, edge.target
    total = torch.zeros_like(clean["blocks.0.hook_resid_pre"])
    for source in graph.sources(arch, model.n_layers):
        if graph.feeds(source, target, arch):
            cache = corrupt if patch and source == edge.source else clean
            total = total + _contribution(model, cache, source)
    for layer in range(model.n_layers):
        if layer < target.layer or (layer == target.layer and target.kind == "mlp" and not arch.parallel):
            total = total + model.weights.b_O[layer]
    return total


def _metric(logits, data) -> torch.Tensor:
    ends = logits[torch.arange(data.n), data.end]
    rows = torch.arange(data.n)
    return (ends[rows, data.answers] - ends[rows, data.contrasts]).mean()


def _input_hook(model, target) -> tuple[str, bool]:
    """(hook, whether the value there comes from a run of the block on the input)."""
    if target.kind == "logits":
        return "ln_final.hook_in", False
    if target.kind == "mlp":
        if model.arch.parallel:
            return f"blocks.{target.layer}.mlp.hook_in", True
        return f"blocks.{target.layer}.ln2.hook_in", False
    return f"blocks.{target.layer}.attn.hook_{target.kind}", True


def _metric_with_input(
    model, data, target, x: torch.Tensor, embed: torch.Tensor | None = None
) -> torch.Tensor:
    """The metric with `target` reading `x` (grad flows to x), complete forward passes only; with
    `embed`, every pass starts from that embedding (blocks.0.hook_resid_pre) instead of the tokens'."""
    bridge = model.bridge
    start = [] if embed is None else [("blocks.0.hook_resid_pre", lambda a, hook: embed)]
    name, from_block = _input_hook(model, target)
    if not from_block:
        return _metric(
            bridge.run_with_hooks(data.tokens, fwd_hooks=[*start, (name, lambda a, hook: x)]), data
        )
    kept = {}
    hooks = [
        *start,
        (f"blocks.{target.layer}.hook_resid_pre", lambda a, hook: x),
        (name, lambda a, hook: kept.setdefault("v", a)),
    ]
    bridge.run_with_hooks(data.tokens, fwd_hooks=hooks, stop_at_layer=target.layer + 1)

    def swap(act, hook):
        out = act.clone()
        if target.kind == "mlp":
            return kept["v"]
        out[:, :, target.index] = kept["v"][:, :, target.index]
        return out

    return _metric(bridge.run_with_hooks(data.tokens, fwd_hooks=[*start, (name, swap)]), data)


def test_rebuilt_inputs_are_the_models_own(model, data):
    """The decomposition the reference relies on: unpatched, it rebuilds each cached input."""
    clean, corrupt = _caches(model, data)
    last = model.n_layers - 1
    for edge in graph.all_edges(model.arch, model.n_layers)[:: max(1, model.n_layers)]:
        target = edge.target
        if target.kind == "logits":
            cached = clean[f"blocks.{last}.hook_resid_post"]
        elif target.kind == "mlp" and not model.arch.parallel:
            cached = clean[f"blocks.{target.layer}.hook_resid_mid"]
        else:
            cached = clean[f"blocks.{target.layer}.hook_resid_pre"]
        torch.testing.assert_close(
            _rebuilt(model, clean, corrupt, edge, patch=False), cached, atol=1e-4, rtol=1e-4
        )


def test_exact_equals_the_plain_reference_on_every_edge(model, data):
    table = E.edge_scores(model, data, E.EdgeOptions(method="exact", batch_size=2), progress=False)
    clean, corrupt = _caches(model, data)
    with torch.no_grad():
        clean_metric = float(_metric(model.bridge(data.tokens), data))
        for edge, row in zip(E.edges_of(table, model), table.itertuples(), strict=True):
            x = _rebuilt(model, clean, corrupt, edge)
            expected = float(_metric_with_input(model, data, edge.target, x)) - clean_metric
            assert row.exact == pytest.approx(expected, abs=2e-4), (row.source, row.target, row.input)
    assert table.attrs["clean"] == pytest.approx(clean_metric, abs=1e-4)
    assert table["exact"].abs().max() > 1e-3  # the edges do something on this model


def test_eap_equals_autograd_on_every_target(model, data):
    table = E.edge_scores(model, data, E.EdgeOptions(method="eap", exact_top=0, batch_size=3), progress=False)
    clean, corrupt = _caches(model, data)
    edges = E.edges_of(table, model)
    by_target: dict = {}
    for edge, score in zip(edges, table["score"], strict=True):
        by_target.setdefault(edge.target, []).append((edge, score))
    for target, items in by_target.items():
        x = _rebuilt(model, clean, corrupt, items[0][0], patch=False).detach().requires_grad_()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(_metric_with_input(model, data, target, x), x)
        for edge, score in items:
            delta = _contribution(model, corrupt, edge.source) - _contribution(model, clean, edge.source)
            assert score == pytest.approx(float((grad * delta).sum()), abs=2e-4, rel=1e-3), (edge, score)
    assert table["exact"].isna().all() and table.attrs["approximation"]


def test_eap_ig_is_mibs_integrated_gradients_on_the_inputs(model, data):
    """EAP-IG-inputs (MIB, hannamw/EAP-IG): the gradient at each target input averaged over runs
    from the embeddings corrupted + k/steps (clean - corrupted), k = 0..steps-1, times the source's
    corrupted - clean difference of the real runs; here by autograd through complete passes."""
    steps = 2
    table = E.edge_scores(
        model, data, E.EdgeOptions(method="eap-ig", steps=steps, exact_top=0, batch_size=3), progress=False
    )
    clean, corrupt = _caches(model, data)
    start, direction = (
        corrupt["blocks.0.hook_resid_pre"],
        clean["blocks.0.hook_resid_pre"] - corrupt["blocks.0.hook_resid_pre"],
    )
    points = [start + k / steps * direction for k in range(steps)]
    runs = []
    for point in points:
        with (
            torch.no_grad(),
            model.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda a, hook, p=point: p)]),
        ):
            runs.append(model.bridge.run_with_cache(data.tokens)[1])
    grads: dict = {}
    edges = E.edges_of(table, model)
    for edge, score in zip(edges, table["score"], strict=True):
        if edge.target not in grads:
            total = 0
            for point, cache in zip(points, runs, strict=True):
                x = _rebuilt(model, cache, cache, edge, patch=False).detach().requires_grad_()
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad(_metric_with_input(model, data, edge.target, x, point), x)
                total = total + grad / steps
            grads[edge.target] = total
        delta = _contribution(model, corrupt, edge.source) - _contribution(model, clean, edge.source)
        assert score == pytest.approx(float((grads[edge.target] * delta).sum()), abs=2e-4, rel=1e-3), edge


def test_eap_ig_averages_other_points_and_patches_its_top_edges_exactly(model, data):
    """IG's gradients are taken on the clean -> corrupted path, not at the clean run alone."""
    eap = E.edge_scores(model, data, E.EdgeOptions(method="eap", exact_top=0), progress=False)
    ig = E.edge_scores(model, data, E.EdgeOptions(method="eap-ig", steps=8, exact_top=20), progress=False)
    assert ig.attrs["steps"] == 8 and ig["exact"].notna().sum() == 20
    assert not torch.allclose(
        torch.tensor(eap["score"].values), torch.tensor(ig.set_index(eap.index)["score"].values)
    )


@pytest.mark.parametrize(
    "options",
    [E.EdgeOptions("eap-ig", steps=3, exact_top=12, batch_size=2), E.EdgeOptions("exact", exact_top=None)],
    ids=["eap-ig", "exact"],
)
def test_the_scores_per_prompt_average_to_the_table_and_are_each_prompts_own(model, data, options):
    """`scored_edges` keeps each edge's value per prompt (the circuit's stability resamples them):
    their mean over the prompts is the table's `score` and `exact` (a sum in another order: float
    tolerance), NaN where not patched; the first two prompts' columns average to the table of a
    dataset of those two prompts alone (another run)."""
    scored = E.scored_edges(model, data, options, progress=False)
    table = scored.table
    assert table.equals(E.edge_scores(model, data, options, progress=False))  # the same computation
    assert scored.score_rows.shape == scored.exact_rows.shape == (len(table), data.n)
    assert np.allclose(scored.score_rows.mean(1), table["score"], rtol=1e-5, atol=1e-6)
    patched = table["exact"].notna().to_numpy()
    assert (~np.isnan(scored.exact_rows).any(1) == patched).all()
    assert np.allclose(scored.exact_rows[patched].mean(1), table["exact"][patched], rtol=1e-5, atol=1e-6)
    two = E.edge_scores(model, data.subset(2), dataclasses.replace(options, exact_top=None), progress=False)
    key = ["source", "target", "input"]
    alone = table[key].merge(two, on=key, how="left")  # the two-prompt table in this table's row order
    assert np.allclose(scored.score_rows[:, :2].mean(1), alone["score"], rtol=1e-5, atol=1e-6)


def test_edge_counts(model):
    arch, L = model.arch, model.n_layers
    edges = graph.all_edges(arch, L)
    H, G = arch.n_heads, arch.n_kv_heads
    sources_before = [1 + layer * (H + 1) for layer in range(L)]
    expected = sum(s * (H + 2 * G + 1) for s in sources_before) + 1 + L * (H + 1)
    if not arch.parallel:
        expected += L * H  # a sequential MLP also reads its own layer's heads
    assert len(edges) == expected


def test_a_norm_on_head_outputs_takes_the_frozen_norm_convention(model):
    """No longer refused: the same graph, read under the frozen-norm convention (the numbers are
    tests/scores/test_edges_frozen.py's, on Gemma 2 and Gemma 3 models)."""
    gemma_like = dataclasses.replace(model.arch, family="gemma2", attn_out_norm=True, mlp_out_norm=True)
    assert (gemma_like.convention, model.arch.convention) == ("frozen-norm", "linear")
    assert graph.all_edges(gemma_like, model.n_layers) == graph.all_edges(model.arch, model.n_layers)


# ---- circuits --------------------------------------------------------------------------------------


def test_every_edge_kept_is_the_clean_model_and_none_the_corrupted(model, data):
    from headscope.scores.circuit.faithfulness import Evaluator

    evaluator = Evaluator(model, data, batch_size=3)
    with torch.no_grad():
        clean = float(_metric(model.bridge(data.tokens), data))
        corrupted = float(_metric(model.bridge(data.corrupted.tokens), data))
    assert evaluator.metric(set(evaluator.every)) == pytest.approx(clean, abs=1e-4)
    assert evaluator.metric(set()) == pytest.approx(corrupted, abs=1e-4)


def test_a_one_edge_circuit_is_the_exact_patch_of_all_others(model, data):
    """Keeping every edge but one is patching that one edge: F equals its exact value."""
    from headscope.scores.circuit.faithfulness import Evaluator

    table = E.edge_scores(model, data, E.EdgeOptions(method="exact", batch_size=3), progress=False)
    evaluator = Evaluator(model, data, batch_size=3)
    for edge, row in list(zip(E.edges_of(table, model), table.itertuples(), strict=True))[:3]:
        kept = set(evaluator.every) - {edge}
        assert evaluator.metric(kept) - table.attrs["clean"] == pytest.approx(row.exact, abs=2e-4)


def test_stacked_circuits_equal_one_at_a_time(model, data):
    """Evaluator.metrics runs several edge sets as stacked copies in one pass: each equals `metric`."""
    from headscope.scores.circuit.faithfulness import Evaluator

    evaluator = Evaluator(model, data, batch_size=3)
    every = evaluator.every
    sets = [set(), set(every[::3]), set(every[:40]), set(every)]
    stacked = evaluator.metrics(sets, per_pass=3)  # two passes: 3 copies, then 1
    assert stacked == pytest.approx([evaluator.metric(kept) for kept in sets], abs=1e-4)


def test_sets_that_do_not_fit_one_pass_run_one_at_a_time(model, data, monkeypatch):
    """Where one copy exceeds the stacking budget, `metrics` runs each set alone: the same
    computation as `per_pass=1`, so the same numbers bit for bit."""
    from headscope.scores.circuit import faithfulness

    evaluator = faithfulness.Evaluator(model, data, batch_size=3)
    every = evaluator.every
    sets = [set(every[::2]), set(every[:30]), set(every)]
    monkeypatch.setattr(faithfulness, "STACK_BYTES", 1)
    assert evaluator.stacked() == 1
    assert evaluator.metrics(sets) == evaluator.metrics(sets, per_pass=1)


# ---- the organism ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def organism():
    return hs.load_model("organism")


def _key_edges(top):
    return top[(top.input == "k") & top.source.isin(["1.0", "1.1"]) & top.target.isin(["2.0", "2.1"])]


def test_organism_default_eap_ig_finds_the_previous_token_to_induction_key_edge(organism):
    """The default twin replaces the first occurrence, so the previous-token heads (1.0, 1.1) write
    differently at the key positions and K-composition into the induction heads (2.0, 2.1) shows:
    among the top 10 by eap-ig and by exact patching; eap-ig agrees with exact (Spearman >= 0.7)."""
    table = hs.edge_attribution(organism, "induction", n=50)
    assert table.attrs["method"] == "eap-ig" and table.attrs["twin"] == "first"
    assert len(_key_edges(table.head(10))) >= 1, table.head(10)
    by_exact = table.reindex(table["exact"].abs().sort_values(ascending=False).index)
    assert len(_key_edges(by_exact.head(10))) >= 1, by_exact.head(10)
    assert table.attrs["spearman"] >= 0.7


def test_organism_previous_token_to_induction_key_edge_is_in_the_top_ten(organism):
    """The old twin (`induction:repeat`) shares the first half with the clean prompt, so the
    previous-token heads' outputs at the key positions do not change there; with the per-position
    mean of the twins as donor, the key edge shows."""
    table = hs.edge_attribution(organism, "induction:repeat", method="exact", donor="mean", n=50)
    top = table.head(10)
    key_edges = top[(top.input == "k") & top.source.isin(["1.0", "1.1"]) & top.target.isin(["2.0", "2.1"])]
    assert len(key_edges) >= 1, top


def test_the_organism_stacks_every_report_circuit_pass_fully(organism):
    """Each built-in task's report circuit (32 prompts, batches of 16) fits MAX_STACKED copies a
    pass, so the organism's curves are computed as before the budget existed."""
    from headscope.report.compute import CIRCUIT_PROMPTS
    from headscope.scores.circuit import faithfulness
    from headscope.tasks.builtin import builtin_tasks
    from headscope.tasks.dataset import build_dataset

    for name, task in builtin_tasks().items():
        dataset = build_dataset(task, organism.tokens, CIRCUIT_PROMPTS, 0)
        assert faithfulness.Evaluator(organism, dataset).stacked() == faithfulness.MAX_STACKED, name
