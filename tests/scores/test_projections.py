"""The layered pass's sliced q / k / v projections against the block's own modules, every family."""

from __future__ import annotations

import pytest
import torch

import headscope as hs
from headscope.models.loading import load_model
from headscope.scores.circuit import blocks, edges, layered, projections
from headscope.scores.circuit.graph import layer_targets
from tests.models.families import FAMILIES
from tests.numerics import float_tolerance

NAMES = [family.name for family in FAMILIES]
SLICED = ("gpt2", "llama", "qwen3", "gemma3", "neox")  # families whose path the test insists on


@pytest.fixture(scope="module", params=NAMES)
def named(request, family_dir):
    return request.param, load_model(str(family_dir(request.param)))


def _runner_and_input(model, seed: int = 0):
    runner = edges.prepared(model)
    data = hs.dataset(model, "seq-digits", n=3, seed=seed)
    runner.clean_pass(data.tokens, data.end)  # records the block arguments
    g = torch.Generator().manual_seed(seed)
    return runner, data, g


def _attention_targets(model, layer: int):
    return [t for t in layer_targets(model.arch, layer) if t.kind in projections.ATTENTION]


def _magnitude(runner, layer: int, attn_in: torch.Tensor) -> float:
    """A bound on the sum of |terms| of any projected value: max |x| * max row 1-norm + max |bias|."""
    found = 0.0
    for linear in projections.projections(runner, layer).values():
        bias = 0.0 if linear.bias is None else float(linear.bias.detach().abs().max())
        found = max(found, float(attn_in.abs().max() * linear.weight.detach().abs().sum(1).max()) + bias)
    return found


def test_sliced_values_are_the_blocks_own(named):
    """Each copy's own input: the sliced value of its target equals the block's own run on it."""
    name, model = named
    runner, data, g = _runner_and_input(model)
    layer = model.n_layers - 1
    if projections.projections(runner, layer) is None:
        assert name not in SLICED, "this family's hooks should allow the sliced path"
        pytest.skip(f"{name}: no sliced path (the block's own modules are used)")
    heads = _attention_targets(model, layer)
    rows, width = data.tokens.shape
    stacked = torch.randn(len(heads) * rows, width, model.weights.d_model, generator=g)
    with torch.no_grad():
        attn_in = projections.attention_input(runner, layer, stacked, len(heads))
        sliced = projections.sliced_values(runner, layer, attn_in, heads)
        names = list(dict.fromkeys(blocks.hook_name(t, True) for t in heads))
        own = layered._taken(blocks.block_values(runner, layer, stacked, names), heads, rows, True)
    assert sliced.keys() == own.keys()
    bound = float_tolerance(model.weights.d_model, _magnitude(runner, layer, attn_in))
    for hook, value in own.items():
        torch.testing.assert_close(sliced[hook], value, rtol=0, atol=bound)


def test_a_family_the_test_names_takes_the_sliced_path(named):
    name, model = named
    runner, _, _ = _runner_and_input(model)
    assert projections.projections(runner, 0) is not None or name not in SLICED


def test_a_mismatch_falls_back_to_the_blocks_own_modules(named, monkeypatch):
    """Sliced values that do not match (here: shifted) are never used: the runner takes the block's
    own path, and the layered logits are the model's own."""
    _, model = named
    runner, data, _ = _runner_and_input(model, seed=1)
    if projections.projections(runner, 0) is None:
        pytest.skip("no sliced path here")
    real = projections.sliced_values
    monkeypatch.setattr(projections, "sliced_values", lambda *a: {k: v + 1.0 for k, v in real(*a).items()})

    def zero(chosen, state):
        return torch.zeros(len(chosen), *state.embed.shape)

    with torch.no_grad():
        resid0 = runner.clean_pass(data.tokens, data.end).pre[0]
        found = layered.layered_logits(runner, model.arch, resid0, data.end, zero)
        own = model.bridge(data.tokens)[torch.arange(data.n), data.end]
    assert layered._SLICED[runner] is False
    torch.testing.assert_close(found, own, rtol=1e-4, atol=1e-4)
