"""Activation patching against hand-hooked runs, and attribution patching against finite differences."""

from __future__ import annotations

import functools

import pytest
import torch

from headscope.scores import interventions
from headscope.scores.patching import attribution_patch, patch
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


@pytest.fixture(scope="module")
def digits(tiny_model):
    return build_dataset(get_task("seq-digits"), tiny_model.tokens, 6, 1)


def _metric(bridge, dataset, tokens, hooks=()):
    with torch.no_grad():
        logits = bridge.run_with_hooks(tokens, fwd_hooks=list(hooks))
    ends = logits[torch.arange(dataset.n), dataset.end]
    rows = torch.arange(dataset.n)
    return float((ends[rows, dataset.answers] - ends[rows, dataset.contrasts]).mean())


def _patched_by_hand(bridge, dataset, base, donor, layer, head, position=None):
    _, cache = bridge.run_with_cache(donor, names_filter=lambda n: n == f"blocks.{layer}.attn.hook_z")
    source = cache[f"blocks.{layer}.attn.hook_z"]

    def hook(z, hook):
        z = z.clone()
        where = slice(None) if position is None else position
        z[:, where, head] = source[:, where, head]
        return z

    return _metric(bridge, dataset, base, [(f"blocks.{layer}.attn.hook_z", hook)])


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_patch_matches_hand_hooked_runs(tiny_model, digits, direction):
    bridge = tiny_model.bridge
    clean_tokens, corrupt_tokens = digits.tokens, digits.corrupted.tokens
    base, donor = (corrupt_tokens, clean_tokens) if direction == "denoise" else (clean_tokens, corrupt_tokens)
    table = patch(tiny_model, digits, direction, batch_size=4)
    clean, corrupted = _metric(bridge, digits, clean_tokens), _metric(bridge, digits, corrupt_tokens)
    assert len(table) == 8
    for row in table.itertuples():
        patched = _patched_by_hand(bridge, digits, base, donor, row.layer, row.head)
        assert row.patched == pytest.approx(patched, abs=1e-5)
        assert row.value == pytest.approx((patched - corrupted) / (clean - corrupted), rel=1e-3)


def test_patch_by_position(tiny_model, digits):
    table = patch(tiny_model, digits, "denoise", by_position=True, batch_size=6)
    width = int(digits.lengths.max())
    assert len(table) == 2 * 4 * width and "position" in table.columns
    for layer, head, position in [(0, 1, width - 1), (1, 3, 5)]:
        row = table[(table.layer == layer) & (table["head"] == head) & (table.position == position)].iloc[0]
        patched = _patched_by_hand(
            tiny_model.bridge, digits, digits.corrupted.tokens, digits.tokens, layer, head, position
        )
        assert row.patched == pytest.approx(patched, abs=1e-5)
    # before the first token where clean and corrupted differ, patching changes nothing
    first = int((digits.tokens != digits.corrupted.tokens).any(0).nonzero()[0])
    assert first > 0
    assert table[table.position < first]["value"].abs().max() < 1e-4
    assert table[table.position >= first]["value"].abs().max() > 1e-2


def test_attribution_patch_is_the_first_order_term(tiny_model, digits):
    """value(h) * (clean - corrupted) = d/de metric(corrupted with z_h + e * (z_clean - z_corr))."""
    table = attribution_patch(tiny_model, digits, batch_size=4)
    assert table["approximation"].all() and len(table) == 2 * 4 + 2
    bridge = tiny_model.bridge
    clean, corrupted = (
        _metric(bridge, digits, digits.tokens),
        _metric(bridge, digits, digits.corrupted.tokens),
    )
    z_clean = interventions.activations(bridge, digits.tokens)
    z_corr = interventions.activations(bridge, digits.corrupted.tokens)
    eps = 1e-2
    for layer, head in [(0, 2), (1, 0)]:

        def hook(z, hook, sign=1.0, layer=layer, head=head):
            z = z.clone()
            z[:, :, head] += sign * eps * (z_clean.z[layer, :, :, head] - z_corr.z[layer, :, :, head])
            return z

        name = f"blocks.{layer}.attn.hook_z"
        up = _metric(bridge, digits, digits.corrupted.tokens, [(name, hook)])
        down = _metric(bridge, digits, digits.corrupted.tokens, [(name, functools.partial(hook, sign=-1.0))])
        slope = (up - down) / (2 * eps) / (clean - corrupted)
        row = table[(table.layer == layer) & (table["head"] == head)].iloc[0]
        assert row.value == pytest.approx(slope, rel=1e-2, abs=1e-4)
