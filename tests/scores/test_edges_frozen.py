"""Edges on Gemma 2/3 (norms on the head outputs, Gemma 2's soft-capped logits).

- the `exact` column is a real patch of the real model: against a reference that patches the
  sender's z inside a complete forward pass, reads the layer's normed write, and delivers the
  difference to the one receiver (`exact.reference_edge_sum`, complete passes, plain hooks);
- frozen-scale patching (`edges.frozen_patching`) against a reference written here from the
  bridge's own hook points only: every residual-stream norm's `hook_scale` set to the clean
  run's value (`run_with_cache`), complete forward passes, the metric of `unembed.hook_out`
  (the logits before the cap);
- EAP (and EAP-IG) under frozen scales is linear on the logit edges: equal to frozen patching;
- circuit evaluation: F(every edge) the clean metric, F(no edge) the corrupted one, and F of all
  edges but one the exact column's patch.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch

from headscope.scores import interventions
from headscope.scores.circuit import blocks, edges, exact, faithfulness, graph, norms
from headscope.scores.circuit.graph import Edge
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import get_task
from tests.models import families as fam
from tests.numerics import float_tolerance

FROZEN = ("gemma2", "gemma3")
# The reference's frozen scales are an edit TransformerLens warns about (rounding-level numerics).
pytestmark = pytest.mark.filterwarnings("ignore:A forward hook edited hook_scale")
SCALE = re.compile(r"^(blocks\.\d+\.(ln1|ln2|ln1_post|ln2_post)|ln_final)\.hook_scale$")


@functools.cache
def _setup(folder: Path):
    model = fam.headscope_model(folder)
    dataset = build_dataset(get_task("ioi"), model.tokens, n=4, seed=1)
    return model, dataset, graph.all_edges(model.arch, model.n_layers)


def _batch(dataset: Dataset) -> interventions.Batch:
    width = int(dataset.lengths.max())
    mask = torch.ones_like(dataset.tokens[:, :width], dtype=torch.bool)
    tokens = dataset.tokens[:, :width]
    return interventions.Batch(
        0, dataset.n, tokens, dataset.lengths - 1, dataset.answers, dataset.contrasts, mask
    )


def _tolerance(scale: float) -> float:
    """Two float32 computations of one patched metric: sums over d_model, layers and prompts."""
    return float_tolerance(fam.HIDDEN * fam.LAYERS * 8, max(scale, 1.0))


# ---- the frozen-scale reference: the bridge's hook points only ------------------------------


def _run(bridge, tokens, hooks, names=()):
    """A complete forward pass with `hooks`; the values at hook points `names`."""
    kept: dict = {}
    keep = [(n, lambda a, hook, n=n: kept.update({n: a.detach()})) for n in names]  # None: observed
    with torch.no_grad():
        bridge.run_with_hooks(tokens, fwd_hooks=[*hooks, *keep])
    return kept


def _frozen_hooks(bridge, tokens):
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: bool(SCALE.match(n)))
    assert any("ln1_post" in n for n in cache), "the model has no attention-output norm"
    return [(name, lambda a, hook, v=value: v.clone()) for name, value in cache.items()]


def _precap_metric(bridge, batch, hooks) -> float:
    logits = _run(bridge, batch.tokens, hooks, ["unembed.hook_out"])["unembed.hook_out"]
    return float(interventions.end_metric(interventions.rows_at(logits, batch.end), batch).sum())


def _source_delta(bridge, batch, corrupted_tokens, frozen, source) -> torch.Tensor:
    """The source's corrupted - clean write in the frozen model, read at the residual stream."""
    if source.kind == "embed":
        name = "blocks.0.hook_resid_pre"
        return _run(bridge, corrupted_tokens, [], [name])[name] - _run(bridge, batch.tokens, [], [name])[name]
    if source.kind == "mlp":
        name = f"blocks.{source.layer}.hook_mlp_out"
        return _run(bridge, corrupted_tokens, [], [name])[name] - _run(bridge, batch.tokens, [], [name])[name]
    z_name, out = f"blocks.{source.layer}.attn.hook_z", f"blocks.{source.layer}.hook_attn_out"
    corrupted_z = _run(bridge, corrupted_tokens, [], [z_name])[z_name]

    def swap(z, hook):
        z = z.clone()
        z[:, :, source.index] = corrupted_z[:, :, source.index]
        return z

    clean = _run(bridge, batch.tokens, frozen, [out])[out]
    return _run(bridge, batch.tokens, [*frozen, (z_name, swap)], [out])[out] - clean


def _target_hooks(bridge, batch, frozen, edge: Edge, delta):
    """Hooks that give the edge's target the clean input plus `delta` (everything else clean)."""
    target = edge.target
    if target.kind == "logits":
        post = _run(bridge, batch.tokens, frozen, ["ln_final.hook_in"])["ln_final.hook_in"]
        return [("ln_final.hook_in", lambda a, hook: post + delta)]
    if target.kind == "mlp":
        mid = _run(bridge, batch.tokens, frozen, [f"blocks.{target.layer}.hook_resid_mid"])
        patched = next(iter(mid.values())) + delta
        return [(f"blocks.{target.layer}.ln2.hook_in", lambda a, hook: patched)]
    pre = f"blocks.{target.layer}.hook_resid_pre"
    name = f"blocks.{target.layer}.attn.hook_{target.kind}"
    clean_pre = _run(bridge, batch.tokens, frozen, [pre])[pre]
    value = _run(bridge, batch.tokens, [*frozen, (pre, lambda a, hook: clean_pre + delta)], [name])[name]

    def replace(act, hook):
        act = act.clone()
        act[:, :, target.index] = value[:, :, target.index]
        return act

    return [(name, replace)]


def frozen_reference(model, dataset: Dataset, chosen: list[Edge]) -> torch.Tensor:
    bridge, batch = model.bridge, _batch(dataset)
    corrupted_tokens = dataset.corrupted.tokens[:, : batch.tokens.shape[1]]
    frozen = _frozen_hooks(bridge, batch.tokens)
    clean = _precap_metric(bridge, batch, frozen)
    out = []
    for edge in chosen:
        delta = _source_delta(bridge, batch, corrupted_tokens, frozen, edge.source)
        hooks = [*frozen, *_target_hooks(bridge, batch, frozen, edge, delta)]
        out.append((_precap_metric(bridge, batch, hooks) - clean) / dataset.n)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name", FROZEN)
def test_frozen_scale_patching_equals_the_hook_reference(family_dir, name):
    model, dataset, every = _setup(family_dir(name))
    got = edges.frozen_patching(model, dataset, every, batch_size=dataset.n)
    want = frozen_reference(model, dataset, every)
    worst = float((got - want).abs().max())
    assert worst <= _tolerance(float(want.abs().max())), (name, worst)
    assert float(want.abs().max()) > 1e-2  # the patches do move the metric


# ---- the exact column: a real patch of the real model -----------------------------------------


def _real_delta(model, batch, corrupted_tokens, source) -> torch.Tensor:
    return _source_delta(model.bridge, batch, corrupted_tokens, [], source)


@pytest.mark.parametrize("name", FROZEN)
def test_the_exact_column_is_a_real_patch_of_the_real_model(family_dir, name):
    model, dataset, every = _setup(family_dir(name))
    table = edges.edge_scores(model, dataset, edges.EdgeOptions("exact", exact_top=None), progress=False)
    assert set(table["convention"]) == {"frozen-norm"} and table.attrs["convention"] == "frozen-norm"
    batch = _batch(dataset)
    corrupted_tokens = dataset.corrupted.tokens[:, : batch.tokens.shape[1]]
    runner = edges.prepared(model)
    from headscope.scores.circuit import activations

    clean_acts = activations.capture(runner, batch.tokens)
    clean = float(interventions.end_metric(interventions.rows_at(clean_acts.logits, batch.end), batch).sum())
    chosen = table.head(12)
    for edge, value in zip(edges.edges_of(chosen, model), chosen["exact"], strict=True):
        delta = _real_delta(model, batch, corrupted_tokens, edge.source)
        want = (exact.reference_edge_sum(runner, clean_acts, delta, edge, batch) - clean) / dataset.n
        assert abs(value - want) <= _tolerance(abs(want)), (name, edge, value, want)
    assert table["exact"].abs().max() > 1e-2
    frozen = edges.frozen_patching(model, dataset, edges.edges_of(chosen, model))
    assert (frozen - torch.tensor(chosen["exact"].to_numpy())).abs().max() > 1e-3  # another quantity


# ---- EAP under frozen scales, and circuits ----------------------------------------------------


@pytest.mark.parametrize("name", FROZEN)
@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_eap_is_frozen_patching_on_the_logit_edges(family_dir, name, method):
    """With the final norm's scale frozen and the logits before the cap, the logits are linear in
    the final residual: the first-order estimate of a logit edge is its frozen-scale patch."""
    model, dataset, every = _setup(family_dir(name))
    table = edges.edge_scores(model, dataset, edges.EdgeOptions(method, exact_top=0), progress=False)
    logit = table[table["input"] == "logits"]
    patched = edges.frozen_patching(model, dataset, edges.edges_of(logit, model))
    got = torch.tensor(logit["score"].to_numpy())
    worst = float((got - patched).abs().max())
    assert worst <= _tolerance(float(patched.abs().max())), (name, method, worst)
    assert set(table["convention"]) == {"frozen-norm"}


@pytest.mark.parametrize("name", FROZEN)
def test_circuit_runs_are_the_real_model(family_dir, name):
    model, dataset, every = _setup(family_dir(name))
    table = edges.edge_scores(model, dataset, edges.EdgeOptions("eap-ig", exact_top=3), progress=False)
    ev = faithfulness.Evaluator(model, dataset)
    assert ev.metric(set(every)) == pytest.approx(table.attrs["clean"], abs=1e-5)
    assert ev.metric(set()) == pytest.approx(table.attrs["corrupted"], abs=1e-5)
    patched = table.dropna(subset=["exact"])
    for edge, value in zip(edges.edges_of(patched, model), patched["exact"], strict=True):
        assert ev.metric(set(every) - {edge}) - table.attrs["clean"] == pytest.approx(value, abs=1e-5)


@pytest.mark.parametrize("name", FROZEN)
def test_eap_is_the_derivative_of_frozen_scale_patching_on_every_edge(family_dir, name):
    """Every edge's EAP score (q, k, v, mlp and logit targets) is the slope of frozen-scale patching
    along its delta: patching eps * delta changes the pre-cap metric by eps * score + O(eps^2)."""
    model, dataset, every = _setup(family_dir(name))
    options = edges.EdgeOptions("eap", exact_top=0, batch_size=dataset.n)
    table = edges.edge_scores(model, dataset, options, progress=False)
    names = zip(table["source"], table["target"], table["input"], strict=True)
    score = dict(zip(names, table["score"], strict=True))
    eap = torch.tensor([score[e.source.name, e.target.name, e.target.kind] for e in every]).double()
    runner, eps = edges.prepared(model), 1e-2
    (run,) = list(edges.batch_runs(model, runner, dataset, dataset.n))
    small = {source: eps * delta for source, delta in run.approx_deltas.items()}
    with norms.frozen(runner.bridge, run.scales), torch.no_grad():
        sums = exact.exact_sums(runner, run.clean, small, every, run.batch, capped=False)
        final = blocks.readout(runner, interventions.rows_at(run.clean.post, run.batch.end), capped=False)
    slope = (sums - float(interventions.end_metric(final, run.batch).sum())) / eps / dataset.n
    worst = float((slope - eap).abs().max())
    assert worst <= 0.01 * float(eap.abs().max()), (name, worst)  # measured: 2.6e-4 to 3.5e-4 of ~0.15
